import Foundation
import Testing
import VQTestSupport
import VQTensor

/// Atomic writes keep what a user set up around a file: a symbolic link stays a link, the permission
/// bits stay, and temporaries left by killed writers are removed.
@Suite("Atomic file replacement")
struct AtomicFileTests {
    let dir: URL = try! TestSupport.scratchDirectory("vq-atomic")

    @Test("writing through a symbolic link replaces its target and keeps the link")
    func symlink() throws {
        let real = dir.appendingPathComponent("real.bin"), link = dir.appendingPathComponent("link.bin")
        try AtomicFile.write(Data([1]), to: real)
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "real.bin")
        try AtomicFile.write(Data([2, 3]), to: link)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link.path) == "real.bin")
        #expect(FileManager.default.contents(atPath: real.path) == Data([2, 3]))
    }

    @Test("a set of files is renamed under a lock of their folder: a writer of the same set waits, the pair never mixes")
    func setUnderLock() throws {
        let a = dir.appendingPathComponent("pair.safetensors"), b = dir.appendingPathComponent("pair.json")
        try AtomicFile.write([(Data([1]), a), (Data([1]), b)])
        #expect(FileManager.default.contents(atPath: a.path) == Data([1]) && FileManager.default.contents(atPath: b.path) == Data([1]))
        // Hold the folder's lock as another writer between its two renames would; this writer must wait for it.
        let lock = open(dir.path, O_RDONLY | O_DIRECTORY)
        #expect(flock(lock, LOCK_EX) == 0)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            try? AtomicFile.write([(Data([2]), a), (Data([2]), b)])
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 0.3) == .timedOut, "the renames waited for the lock")
        #expect(FileManager.default.contents(atPath: a.path) == Data([1]) && FileManager.default.contents(atPath: b.path) == Data([1]))
        flock(lock, LOCK_UN)
        close(lock)
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(FileManager.default.contents(atPath: a.path) == Data([2]) && FileManager.default.contents(atPath: b.path) == Data([2]))
    }

    @Test("a set that names one file twice — however spelt, through a symbolic or a hard link — is refused and nothing is written")
    func sameFileTwiceInASet() throws {
        let a = dir.appendingPathComponent("a.bin"), link = dir.appendingPathComponent("link.bin")
        try AtomicFile.write(Data([1]), to: a)
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "a.bin")
        let hard = dir.appendingPathComponent("hard.bin")
        try FileManager.default.linkItem(at: a, to: hard)
        let b = dir.appendingPathComponent("b.bin")
        for twice in [a, dir.appendingPathComponent("./a.bin"), link, hard] {
            #expect(throws: TensorFileError.self) { try AtomicFile.write([(Data([2]), a), (Data([3]), b), (Data([4]), twice)]) }
            #expect(FileManager.default.contents(atPath: a.path) == Data([1]) && !FileManager.default.fileExists(atPath: b.path))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["a.bin", "hard.bin", "link.bin"])
    }

    @Test("a replaced file keeps its permission bits")
    func mode() throws {
        let f = dir.appendingPathComponent("m.bin")
        try AtomicFile.write(Data([1]), to: f)
        chmod(f.path, 0o600)
        try AtomicFile.write(Data([2]), to: f)
        var st = stat()
        stat(f.path, &st)
        #expect(st.st_mode & 0o777 == 0o600)
    }

    @Test("temporaries of writers that died are removed by the next write; a live writer's are not")
    func staleTemporaries() throws {
        let f = dir.appendingPathComponent("t.bin")
        // PID 2^22 + 1 is above Linux's pid_max default range in containers; check it is not running.
        var dead: Int32 = 4_194_301
        while kill(dead, 0) == 0 { dead -= 1 }
        let stale = dir.appendingPathComponent(".t.bin.tmp-\(dead)-123")
        let live = dir.appendingPathComponent(".t.bin.tmp-1-456")  // PID 1 always runs
        try Data([0]).write(to: stale)
        try Data([0]).write(to: live)
        try AtomicFile.write(Data([9]), to: f)
        #expect(!FileManager.default.fileExists(atPath: stale.path))
        #expect(FileManager.default.fileExists(atPath: live.path))
    }

    @Test("a name of up to 255 bytes (any characters) is writable: its temporary's name is cut to fit; a longer one is refused before anything",
          arguments: [200, 228, 229, 240, 250, 255])
    func longNames(_ bytes: Int) throws {
        // Two-byte characters, so a cut in the middle of one would be an invalid name.
        let name = String(repeating: "é", count: (bytes - 4) / 2) + String(repeating: "x", count: (bytes - 4) % 2) + ".bin"
        #expect(name.utf8.count == bytes)
        let f = dir.appendingPathComponent(name)
        #expect(StagedFile.targetProblem(f) == nil)
        try AtomicFile.write(Data([7]), to: f)
        try AtomicFile.write(Data([8]), to: f)   // replaced, through a temporary of the cut name
        #expect(FileManager.default.contents(atPath: f.path) == Data([8]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }.isEmpty)
        // A stale temporary of a killed writer is found under the cut name too.
        var dead: Int32 = 4_194_301
        while kill(dead, 0) == 0 { dead -= 1 }
        let staged = try StagedFile(replacing: f)
        let prefix = staged.temporaryName.prefix { $0 != "-" }   // ".NAME(cut).tmp"
        staged.abandon()
        let stale = dir.appendingPathComponent("\(prefix)-\(dead)-1")
        try Data([0]).write(to: stale)
        try AtomicFile.write(Data([9]), to: f)
        #expect(!FileManager.default.fileExists(atPath: stale.path))
        try FileManager.default.removeItem(at: f)
    }

    @Test("a name longer than 255 bytes is refused, naming why, and nothing is written")
    func tooLongName() throws {
        let f = dir.appendingPathComponent(String(repeating: "a", count: 252) + ".bin")
        #expect(StagedFile.targetProblem(f)?.contains("too long") == true)
        #expect(throws: TensorFileError.self) { try AtomicFile.write(Data([1]), to: f) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test("a writer dropped without commit leaves the previous file and no temporary")
    func abandoned() throws {
        let f = dir.appendingPathComponent("w.npy")
        try NumPyFile.write(.float(Tensor([1, 2])), to: f)
        do {
            let w = try TensorFileWriter(path: f.path, shape: [2], isFloat: true)
            try w.write(.float(Tensor([5])), atElement: 0)
        }
        #expect(try NumPyFile.read(contentsOf: f) == .float(Tensor([1, 2])))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }.isEmpty)
    }

    @Test("only a regular file is read or replaced: a folder, a named pipe, a device is refused, named, and left as it was")
    func specialFiles() throws {
        let folder = dir.appendingPathComponent("folder.npy"), pipe = dir.appendingPathComponent("pipe.npy")
        let device = dir.appendingPathComponent("null.npy")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        #expect(mkfifo(pipe.path, 0o644) == 0)
        // A character device like /dev/null (mknod needs root; without it the device case is /dev/null itself, read only).
        let madeDevice = mknod(device.path, S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0
        let t = StoredTensor.float(Tensor([1, 2], shape: [1, 2]))
        for (url, kind) in [(folder, "a folder"), (pipe, "a named pipe")] + (madeDevice ? [(device, "a character device")] : []) {
            #expect(StagedFile.targetProblem(url)?.contains(kind) == true, "\(url.lastPathComponent)")
            #expect(throws: TensorFileError.self) { try NumPyFile.write(t, to: url) }
            var st = stat()
            #expect(lstat(url.path, &st) == 0 && TensorFileError.specialFileKind(st.st_mode) == kind, "\(kind) is still there")
            // Reading: refused at once (a pipe without a writer would block an open; a device would be read forever).
            #expect(throws: TensorFileError.self) { _ = try NumPyFile.read(contentsOf: url) }
            #expect(throws: TensorFileError.self) { _ = try TensorFileReader(path: url.path) }
        }
        for path in ["/dev/zero", "/dev/urandom"] {
            #expect(throws: TensorFileError.self) { _ = try NumPyFile.read(contentsOf: URL(fileURLWithPath: path)) }
            #expect(throws: TensorFileError.self) { _ = try TensorFileReader(path: path) }
            #expect(throws: TensorFileError.self) { _ = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path)) }
        }
        // A file over the caller's limit is refused before it is read.
        let big = dir.appendingPathComponent("big.json")
        try Data(count: 4096).write(to: big)
        #expect(throws: TensorFileError.self) { _ = try TensorFileError.mappedContents(of: big, limit: 4095) }
        #expect(try TensorFileError.mappedContents(of: big, limit: 4096).count == 4096)
        // A regular file and a new one are fine.
        #expect(StagedFile.targetProblem(big) == nil && StagedFile.targetProblem(dir.appendingPathComponent("new.npy")) == nil)
        #expect(StagedFile.targetProblem(dir.appendingPathComponent("missing/new.npy"))?.contains("no such folder") == true)
    }

    @Test("streamed reads and writes round-trip every format")
    func streaming() throws {
        let t = Tensor((0..<24).map { Float($0) * 0.5 }, shape: [6, 4])
        for ext in ["npy", "fvecs", "safetensors"] {
            let f = dir.appendingPathComponent("s.\(ext)")
            let w = try TensorFileWriter(path: f.path, shape: [6, 4], isFloat: true)
            try w.write(.float(t.slice(axis: 0, 3..<6)), atElement: 12)   // out of order on purpose
            try w.write(.float(t.slice(axis: 0, 0..<3)), atElement: 0)
            try w.commit()
            let r = try TensorFileReader(path: f.path)
            #expect(r.shape == [6, 4], "\(ext)")
            #expect(try r.elements(4..<20).asFloat.scalars == Array(t.scalars[4..<20]), "\(ext)")
            #expect(try r.elements(8..<16).asFloat.scalars == Array(t.scalars[8..<16]), "\(ext)")
        }
        let i = dir.appendingPathComponent("i.ivecs")
        let w = try TensorFileWriter(path: i.path, shape: [3], isFloat: false)
        try w.write(.integer(IndexTensor([7, 300, 1])), atElement: 0)
        try w.commit()
        #expect(try VecsFile.read(contentsOf: i) == .integer(IndexTensor([7, 300, 1], shape: [3, 1])))
        #expect(throws: TensorFileError.self) { try TensorFileWriter(path: dir.appendingPathComponent("x.ivecs").path, shape: [2, 2], isFloat: true) }
        let b = try TensorFileWriter(path: dir.appendingPathComponent("x.bvecs").path, shape: [2], isFloat: false)
        #expect(throws: TensorFileError.self) { try b.write(.integer(IndexTensor([1, 256])), atElement: 0) }
    }
}
