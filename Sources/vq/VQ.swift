import ArgumentParser

/// The `vq` command-line tool: one root command, one type per subcommand.
@main
struct VQ: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vq",
        abstract: "Learn vector-quantization codebooks, encode and decode vectors, freeze codes exactly.",
        version: "0.1.0",
        subcommands: [Demo.self, Train.self, Encode.self, Decode.self, Inspect.self, Freeze.self, Unfreeze.self, Quickstart.self, Bench.self])
}
