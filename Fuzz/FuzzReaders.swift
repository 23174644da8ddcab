// libFuzzer entry point for the file readers: any byte string must parse or throw a typed error,
// never trap, hang or allocate without bound. Built by Fuzz/run.sh (not part of the package build).
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(bytes: data, count: size)
    // The first byte picks the reader, so one corpus exercises all three.
    switch bytes.first.map({ $0 % 3 }) ?? 0 {
    case 0: _ = try? SafeTensorsFile.parse(bytes.dropFirst())
    case 1: _ = try? NumPyFile.parse(bytes.dropFirst())
    default: _ = try? VecsFile.parse(Data(bytes.dropFirst()), kind: .fvecs)
    }
    return 0
}
