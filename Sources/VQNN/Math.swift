#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@inline(__always) func _pow(_ x: Double, _ y: Double) -> Double { pow(x, y) }
