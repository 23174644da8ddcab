import ArgumentParser
import Foundation
import VQTensor

/// The `vq` command-line tool: one root command, one type per subcommand.
@main
struct VQ: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vq",
        abstract: "Learn vector-quantization codebooks, encode and decode vectors, freeze codes exactly.",
        version: "0.1.0",
        subcommands: [Demo.self, Train.self, Encode.self, Decode.self, Inspect.self, Compare.self, Freeze.self, Unfreeze.self, Export.self, Quickstart.self, Bench.self, Example.self])

    /// Parses and runs a subcommand. Any error is one line on standard error (`vq: error: …`, no usage
    /// text) and a non-zero exit; `--help` and `--version` print as usual.
    static func main() {
        if ProcessInfo.processInfo.environment["VQ_SYSTEM_MALLOC"] == nil { Memory.keepFreedMemory() }  // training loops reuse warm pages (see Memory.keepFreedMemory)
        removeTemporariesOnSignals()
        do {
            if let problem = KernelLevel.environmentProblem { throw ValidationError(problem) }
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let text = oneLine(describe(error))   // never an empty line: a bare exit status says so
            FileHandle.standardError.write(Data("vq: error: \(text.isEmpty ? "failed (exit status \(code.rawValue))" : text)\n".utf8))
            Foundation.exit(code.rawValue == 0 ? 1 : code.rawValue)
        }
    }

    /// On SIGINT (Ctrl-C), SIGTERM (a scheduler's stop) and SIGHUP, the half-written temporary of every file being
    /// written is removed (``StagedFile/abandonAll()``; the files themselves are as before, or whole), then the process
    /// ends by the signal as it would have. A signal the tool was started with ignored (`nohup`) stays ignored.
    nonisolated(unsafe) static var signalSources: [any DispatchSourceSignal] = []
    static func removeTemporariesOnSignals() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            var current = sigaction()
            sigaction(sig, nil, &current)
            if unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == 1 { continue }   // SIG_IGN
            signal(sig, SIG_IGN)   // delivered to the source below instead
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                StagedFile.abandonAll()
                // End by the signal: its default action, unblocked in this thread (Dispatch blocks it to read it),
                // raised here.
                signal(sig, SIG_DFL)
                var set = sigset_t()
                sigemptyset(&set)
                sigaddset(&set, sig)
                pthread_sigmask(SIG_UNBLOCK, &set, nil)
                raise(sig)
            }
            source.resume()
            signalSources.append(source)
        }
    }

    /// The message of an error in words: Foundation's file errors as `PATH: reason` (not their domain, code
    /// and user-info dump), every other error as the argument parser words it.
    static func describe(_ error: Error) -> String {
        guard error is CocoaError || type(of: error) == NSError.self else { return message(for: error) }
        let ns = error as NSError
        var reason = ns.localizedDescription
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
           let text = strerror(Int32(underlying.code)).map({ String(cString: $0) }) {
            reason += " (\(text))"
        }
        let path = (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
        return path.map { "\($0): \(reason)" } ?? reason
    }

    /// Collapses a message to one line (no usage text, no line breaks from file excerpts).
    static func oneLine(_ message: String) -> String {
        var text = message
        if let usage = text.range(of: "\nUsage:") { text = String(text[..<usage.lowerBound]) }
        if text.hasPrefix("Error: ") { text.removeFirst(7) }
        return text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: " ")
    }
}
