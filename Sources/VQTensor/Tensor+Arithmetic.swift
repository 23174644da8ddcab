// Broadcasting arithmetic, comparisons and selection (NumPy broadcasting rules).

extension Tensor {
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        record(Elementwise.arithmetic(a, b, op: 0, "+") { $0 + $1 }, .add(lhs: a.shape, rhs: b.shape), [a, b])
    }
    public static func - (a: Tensor, b: Tensor) -> Tensor {
        record(Elementwise.arithmetic(a, b, op: 1, "-") { $0 - $1 }, .sub(lhs: a.shape, rhs: b.shape), [a, b])
    }
    public static func * (a: Tensor, b: Tensor) -> Tensor {
        record(Elementwise.arithmetic(a, b, op: 2, "*") { $0 * $1 }, .mul(a.detached(), b.detached()), [a, b])
    }
    public static func / (a: Tensor, b: Tensor) -> Tensor {
        record(Elementwise.arithmetic(a, b, op: 3, "/") { $0 / $1 }, .div(a.detached(), b.detached()), [a, b])
    }
    public static prefix func - (a: Tensor) -> Tensor { a.unary(.neg) }

    public static func + (a: Tensor, b: Float) -> Tensor { a + Tensor(b) }
    public static func + (a: Float, b: Tensor) -> Tensor { Tensor(a) + b }
    public static func - (a: Tensor, b: Float) -> Tensor { a - Tensor(b) }
    public static func - (a: Float, b: Tensor) -> Tensor { Tensor(a) - b }
    public static func * (a: Tensor, b: Float) -> Tensor { a * Tensor(b) }
    public static func * (a: Float, b: Tensor) -> Tensor { Tensor(a) * b }
    public static func / (a: Tensor, b: Float) -> Tensor { a / Tensor(b) }
    public static func / (a: Float, b: Tensor) -> Tensor { Tensor(a) / b }

    public static func += (a: inout Tensor, b: Tensor) { a = a + b }
    public static func -= (a: inout Tensor, b: Tensor) { a = a - b }
    public static func *= (a: inout Tensor, b: Tensor) { a = a * b }
    public static func /= (a: inout Tensor, b: Tensor) { a = a / b }

    /// Element-wise maximum (the gradient is split evenly on ties).
    public func maximum(_ other: Tensor) -> Tensor {
        Tensor.record(Elementwise.zip(self, other, "maximum") { Swift.max($0, $1) },
                      .maximum(detached(), other.detached()), [self, other])
    }
    /// Element-wise minimum (the gradient is split evenly on ties).
    public func minimum(_ other: Tensor) -> Tensor {
        Tensor.record(Elementwise.zip(self, other, "minimum") { Swift.min($0, $1) },
                      .minimum(detached(), other.detached()), [self, other])
    }
    public func maximum(_ v: Float) -> Tensor { maximum(Tensor(v)) }
    public func minimum(_ v: Float) -> Tensor { minimum(Tensor(v)) }

    // MARK: Comparisons (0/1 results, never differentiable)

    public static func .< (a: Tensor, b: Tensor) -> Tensor { Elementwise.zip(a, b, ".<") { $0 < $1 ? 1 : 0 } }
    public static func .<= (a: Tensor, b: Tensor) -> Tensor { Elementwise.zip(a, b, ".<=") { $0 <= $1 ? 1 : 0 } }
    public static func .> (a: Tensor, b: Tensor) -> Tensor { Elementwise.zip(a, b, ".>") { $0 > $1 ? 1 : 0 } }
    public static func .>= (a: Tensor, b: Tensor) -> Tensor { Elementwise.zip(a, b, ".>=") { $0 >= $1 ? 1 : 0 } }
    public static func .== (a: Tensor, b: Tensor) -> Tensor { Elementwise.zip(a, b, ".==") { $0 == $1 ? 1 : 0 } }
    public static func .!= (a: Tensor, b: Tensor) -> Tensor { Elementwise.zip(a, b, ".!=") { $0 != $1 ? 1 : 0 } }
    public static func .< (a: Tensor, b: Float) -> Tensor { a .< Tensor(b) }
    public static func .<= (a: Tensor, b: Float) -> Tensor { a .<= Tensor(b) }
    public static func .> (a: Tensor, b: Float) -> Tensor { a .> Tensor(b) }
    public static func .>= (a: Tensor, b: Float) -> Tensor { a .>= Tensor(b) }
    public static func .== (a: Tensor, b: Float) -> Tensor { a .== Tensor(b) }
    public static func .!= (a: Tensor, b: Float) -> Tensor { a .!= Tensor(b) }

    /// 1 where an element is finite, 0 for NaN and ±∞.
    public var isFiniteMask: Tensor { Elementwise.map(self) { $0.isFinite ? 1 : 0 } }
    /// Whether every element is finite.
    public var allFinite: Bool { scalars.allSatisfy { $0.isFinite } }

    /// `condition ? a : b` element-wise with broadcasting; `condition` is read as nonzero = true.
    public static func select(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
        guard let ab = Shape.broadcast(a.shape, b.shape), let shape = Shape.broadcast(condition.shape, ab) else {
            preconditionFailure("select: shapes \(condition.shape), \(a.shape), \(b.shape) do not broadcast")
        }
        let c = Elementwise.broadcast(condition, to: shape)
        let av = Elementwise.broadcast(a, to: shape), bv = Elementwise.broadcast(b, to: shape)
        let out = Tensor.uninitialized(shape) { o in
            for i in 0..<o.count { o[i] = c.scalars[i] != 0 ? av.scalars[i] : bv.scalars[i] }
        }
        return record(out, .select(condition: c, lhs: a.shape, rhs: b.shape), [a, b])
    }
}

