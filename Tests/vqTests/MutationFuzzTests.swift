import Foundation
import Testing

/// The structured mutation fuzzer (`vq-fuzz --configs/--states/--checkpoints/--calls/--commands`, Fuzz/CLI/Mutations.swift,
/// APICalls.swift and Commands.swift) for a bounded number of cases: mutated configurations of all 17 quantizers (every
/// keyword of each, values and types), mutated resumable states, checkpoints of every quantizer with values set to
/// extremes, sequences of library calls with edge-value arguments, and `vq` command lines (every option of every
/// command) — each built and run or refused; a trap, a call that threw having changed the state, or a command that
/// touched a file it was not asked to write ends the process, and the test fails naming the case. CI runs more in release (.ci/run); the long run is in Fuzz/README.md.
@Suite("mutation fuzzing", .serialized)
struct MutationFuzzTests {
    static var binary: URL { VQProcess.binary.deletingLastPathComponent().appendingPathComponent("vq-fuzz") }

    func run(_ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    @Test("mutated configurations of every quantizer build and run, or are refused", arguments: [101, 102])
    func configurations(_ seed: Int) throws {
        let (status, text) = try run(["--configs", "2500", "--seed", "\(seed)"])
        let trap = text.split(separator: "\n").first { $0.contains("Fatal error") || $0.contains("Precondition failed") || $0.contains("runtime failure") }
        #expect(status == 0 && text.contains("no trap"), "seed \(seed): \(trap ?? "") — the case is in the fuzzer's case.txt")
    }

    @Test("checkpoints of every quantizer with values set to extremes are refused, or load and work", arguments: [301])
    func checkpoints(_ seed: Int) throws {
        let (status, text) = try run(["--checkpoints", "1500", "--seed", "\(seed)"])
        #expect(status == 0 && text.contains("no trap"), "seed \(seed): \(text.suffix(600))")
    }

    @Test("library calls with edge-value arguments on every quantizer: each succeeds, or throws having changed nothing; frozen elements hold",
          arguments: [401])
    func calls(_ seed: Int) throws {
        let (status, text) = try run(["--calls", "1500", "--seed", "\(seed)"])
        #expect(status == 0 && text.contains("no trap"), "seed \(seed): \(text.suffix(600))")
    }

    @Test("random command lines of every command over every quantizer: exit 0 or one error line; a refusal changes nothing, a success only its outputs",
          arguments: [501])
    func commands(_ seed: Int) throws {
        let (status, text) = try run(["--commands", "150", "--seed", "\(seed)", "--limit", "120"])
        #expect(status == 0 && text.contains("no trap"), "seed \(seed): \(text.suffix(800))")
    }

    @Test("mutated resumable states are refused or resume", arguments: [201])
    func states(_ seed: Int) throws {
        let (status, text) = try run(["--states", "1500", "--seed", "\(seed)"])
        #expect(status == 0 && text.contains("no trap"), "seed \(seed): \(text.suffix(600))")
    }
}
