import Foundation
import VQTensor
import VectorQuantize

extension TrainingState {
    /// Refuses to write the state over a file that is not a state of this run: a user's file at the default
    /// path (OUTPUT.state.safetensors), or the state of another unfinished run.
    static func checkReplaceable(_ url: URL, resuming resume: String?) throws {
        guard FileManager.default.fileExists(atPath: url.path) else { return }
        if let resume, FileIdentity(resume) == FileIdentity(url.path) { return }
        let metadata = (try? SafeTensorsFile.readHeader(contentsOf: url))?.metadata  // the header only: the file may be large
        guard let metadata, metadata["format"]?.hasPrefix("vq-train-state") == true else {
            throw CLIError("\(url.path) exists and is not a vq train state: it would be overwritten by the run's state; pass --state with another path")
        }
        throw CLIError("\(url.path) holds the state of an unfinished run (step \(metadata["step"] ?? "?")): continue it with --resume \(url.path), or remove it to start over")
    }

}
