import Foundation
import VQNN
import VQTensor

/// One reference case: the JSON description and its tensors (see `Fixtures/README.md`).
struct ReferenceFixture: @unchecked Sendable {
    let name: String
    let json: [String: Any]
    let tensors: [String: StoredTensor]

    var module: String { json["module"] as? String ?? "?" }
    var ctorKwargs: [String: Any] { json["ctor_kwargs"] as? [String: Any] ?? [:] }
    var forwardKwargs: [String: Any] { json["forward_kwargs"] as? [String: Any] ?? [:] }
    var mode: String { json["mode"] as? String ?? "train" }
    var steps: Int? { json["steps"] as? Int }
    var xRequiresGrad: Bool { json["x_requires_grad"] as? Bool ?? false }

    func float(_ key: String) -> Tensor? { tensors[key]?.asFloat }
    func ints(_ key: String) -> IndexTensor? { tensors[key]?.asIndices }

    /// Forward keywords of step `s` (per-step keywords merged over the common ones).
    func forwardKwargs(step s: Int) -> [String: Any] {
        var kw = forwardKwargs
        if let per = json["forward_kwargs_per_step"] as? [[String: Any]], s < per.count {
            for (k, v) in per[s] { kw[k] = v }
        }
        return kw
    }

    /// Tolerance for a float tensor: 2e-6 per training step (2e-5 for cases of 20 steps or more), raised
    /// by the case's `tolerance_hints`.
    func tolerance(_ key: String) -> Float {
        let steps = self.steps ?? 1
        var atol: Float = steps >= 20 ? 2e-5 : 2e-6 * Float(steps)
        if let hints = json["tolerance_hints"] as? [String: Any], let h = hints[key] as? Double { atol = max(atol, Float(h)) }
        return atol
    }

    /// Rows of a tensor that were filled with random samples in the reference (not reproducible).
    func rngDependentRows(_ key: String) -> [Bool]? {
        guard let map = json["rng_dependent_rows"] as? [String: String], let maskKey = map[key],
              let m = ints(maskKey) else { return nil }
        return m.scalars.map { $0 != 0 }
    }

    /// Every case in a folder (`<name>.json` + `<name>.safetensors`), sorted by name; other JSON files (`index.json`,
    /// `reference_signatures.json`) are not cases.
    static func loadAll(from folder: URL) throws -> [ReferenceFixture] {
        let all = Set(try FileManager.default.contentsOfDirectory(atPath: folder.path))
        let files = all.filter { $0.hasSuffix(".json") && all.contains(String($0.dropLast(5)) + ".safetensors") }.sorted()
        return try files.map { f in
            let name = String(f.dropLast(5))
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent(f))) as? [String: Any] ?? [:]
            let st = try SafeTensorsFile.read(contentsOf: folder.appendingPathComponent(name + ".safetensors"))
            return ReferenceFixture(name: name, json: json, tensors: st.tensors)
        }
    }

    /// The package's copy of the reference cases, and the folder in `VQ_REFERENCE_FIXTURES` when set.
    static func folders() -> [URL] {
        var out: [URL] = []
        if let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) { out.append(url) }
        if let extra = ProcessInfo.processInfo.environment["VQ_REFERENCE_FIXTURES"], !extra.isEmpty {
            out.append(URL(fileURLWithPath: extra))
        }
        return out
    }
}

/// Compares produced tensors with a case's expected ones and keeps the tally the runner prints.
struct FixtureComparison {
    let fixture: ReferenceFixture
    var compared = 0
    var skipped: [String] = []
    var failures: [String] = []
    /// Keys compared or skipped with a reason.
    var seen = Set<String>()

    /// Output tensors of the case (everything but `input.*` and `before.*`) that were neither compared nor
    /// skipped with a reason: a case passes only when this is empty.
    var uncompared: [String] {
        fixture.tensors.keys.filter { !$0.hasPrefix("input.") && !$0.hasPrefix("before.") && !seen.contains($0) }.sorted()
    }

    init(_ fixture: ReferenceFixture) { self.fixture = fixture }

    /// Integers exactly; floats within tolerance. `frozenRows` (per row of the tensor, leading axes before
    /// the last one for embed-like tensors) are compared bit-exactly to `frozenReference` instead.
    /// `atol` overrides the case's tolerance (e.g. relative to a large scalar sum, whose float32 rounding
    /// depends on the order of the additions).
    mutating func compare(_ key: String, _ actual: StoredTensor?, frozenRows: [Bool]? = nil, frozenReference: Tensor? = nil, atol atolOverride: Float? = nil) {
        guard let expected = fixture.tensors[key] else { return }
        seen.insert(key)
        guard let actual else {
            failures.append("\(key): not produced")
            return
        }
        compared += 1
        guard actual.shape == expected.shape || (actual.shape.reduce(1, *) == expected.shape.reduce(1, *) && expected.shape.isEmpty) else {
            failures.append("\(key): shape \(actual.shape), expected \(expected.shape)")
            return
        }
        switch (expected, actual) {
        case (.integer(let e), _):
            guard let a = actual.asIndices, a.scalars == e.scalars else {
                let a = actual.asIndices?.scalars ?? []
                let bad = zip(a, e.scalars).enumerated().filter { $0.element.0 != $0.element.1 }.prefix(3)
                failures.append("\(key): integers differ at \(bad.map { "\($0.offset): \($0.element.0) vs \($0.element.1)" })")
                return
            }
        case (.float(let e), _):
            let a = actual.asFloat
            let atol = atolOverride ?? fixture.tolerance(key)
            let rowsN = frozenRows?.count ?? fixture.rngDependentRows(key)?.count ?? 1
            let rowLen = max(1, e.count / max(rowsN, 1))
            let skipRows = fixture.rngDependentRows(key)
            var worst: Float = 0, worstAt = -1
            for i in 0..<e.count {
                let r = i / rowLen
                if let frozenRows, r < frozenRows.count, frozenRows[r], let ref = frozenReference {
                    if a.scalars[i].bitPattern != ref.scalars[i].bitPattern {
                        failures.append("\(key): frozen row \(r) changed (\(ref.scalars[i]) → \(a.scalars[i]))")
                        return
                    }
                    continue
                }
                if let skipRows, r < skipRows.count, skipRows[r] { continue }
                let diff = abs(a.scalars[i] - e.scalars[i])
                if !(diff <= atol) && !(a.scalars[i].isNaN && e.scalars[i].isNaN) {
                    if !(diff <= worst) { worst = diff; worstAt = i }
                }
            }
            if worstAt >= 0 {
                failures.append("\(key): max |Δ| \(worst) > \(atol) at \(worstAt) (got \(a.scalars[worstAt]), expected \(e.scalars[worstAt]))")
            }
        }
    }

    /// Every parameter gradient the case recorded under `prefix` (`grad.loss.`, `grad.objective.`), looked up
    /// by the parameter's key in `module`. With `relative`, the tolerance scales with the gradient's size (a
    /// weight gradient sums over every row, so float32 sums in another order differ by ~1e-6 relative).
    /// With `zeroWhenAbsent`, a parameter that received no gradient counts as a zero gradient (the case
    /// records zeros for parameters the loss does not reach: its JSON's `grad.unused_zero`).
    mutating func compareParameterGradients(_ prefix: String, of module: Module, relative: Bool = false, zeroWhenAbsent: Bool = false) {
        let params = Dictionary(module.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        for key in fixture.tensors.keys.sorted() where key.hasPrefix(prefix) && key != prefix + "x" {
            let p = params[String(key.dropFirst(prefix.count))]
            let grad = p?.grad ?? (zeroWhenAbsent ? p.map { Tensor.zeros($0.shape) } : nil)
            let atol: Float? = relative ? 2e-6 * max(1, grad.map { $0.scalars.map(abs).max() ?? 0 } ?? 0) : nil
            compare(key, grad.map { .float($0) }, atol: atol)
        }
    }

    mutating func skip(_ key: String, _ reason: String) {
        if fixture.tensors[key] != nil {
            skipped.append("\(key) (\(reason))")
            seen.insert(key)
        }
    }

    var line: String {
        failures.isEmpty && uncompared.isEmpty ? "case \(fixture.name): compared \(compared) tensors, skipped \(skipped.count)"
            : failures.isEmpty ? "case \(fixture.name): FAILED not compared: \(uncompared.joined(separator: ", "))"
            : "case \(fixture.name): FAILED \(failures.joined(separator: "; "))"
    }
}
