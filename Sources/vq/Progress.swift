import Foundation

/// Progress of a long loop: a redrawn bar on a terminal, plain periodic lines otherwise.
struct Progress {
    let label: String
    let total: Int
    let start = Date()
    let interactive = isatty(STDOUT_FILENO) != 0
    var lastPrinted = -1
    let every: Int

    init(_ label: String, total: Int) {
        self.label = label
        self.total = max(total, 1)
        every = max(1, total / 10)
    }

    /// Reports step `step` (1-based) with the current metrics.
    mutating func update(_ step: Int, loss: Float, usage: Int, codes: Int, perplexity: Float) {
        let elapsed = Date().timeIntervalSince(start)
        let eta = step > 0 ? elapsed / Double(step) * Double(total - step) : 0
        let metrics = String(format: "loss %.4f  codes used %d/%d  perplexity %.1f", loss, usage, codes, perplexity)
        if interactive {
            let width = 24, filled = width * step / total
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            print(String(format: "\r%@ %@ %d/%d  ETA %.0fs  %@", label, bar, step, total, eta, metrics), terminator: "")
            if step == total { print("") }
            FileHandle.standardOutput.synchronizeFile()
        } else if step == total || step - lastPrinted >= every {
            print(String(format: "%@ step %d/%d  ETA %.0fs  %@", label, step, total, eta, metrics))
            lastPrinted = step
        }
    }
}

/// Perplexity `exp(H)` of code usage counts (the effective number of codes in use).
func perplexity(_ counts: [Int]) -> Float {
    let total = Float(counts.reduce(0, +))
    guard total > 0 else { return 0 }
    var h: Float = 0
    for c in counts where c > 0 {
        let p = Float(c) / total
        h -= p * logf(p)
    }
    return expf(h)
}
