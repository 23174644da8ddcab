import Foundation
import VQTestSupport

/// Runs the built `vq` binary (next to the test bundle) and captures its output.
enum VQProcess {
    struct Result { let status: Int32; let stdout: String; let stderr: String }

    /// The `vq` executable next to the test bundle.
    static var binary: URL {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<3 where !FileManager.default.fileExists(atPath: dir.appendingPathComponent("vq").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("vq")
    }

    /// Runs `vq args`; a run still going after `timeout` seconds is killed (and shows as signalled, status 9).
    static func run(_ args: [String], timeout: Double = 600, environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let pid = p.processIdentifier
        let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        defer { watchdog.cancel() }
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// A fresh temporary folder.
    static func temporaryDirectory() -> URL {
        try! TestSupport.scratchDirectory("vq-cli")
    }
}
