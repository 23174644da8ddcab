import VQNN
import VQTensor

/// The quantizers' random generators, saved and restored by resumable training (`Module.randomStates()`):
/// each keeps its generator in `rng`.
protocol SeededModule: RandomStateOwner {
    var rng: SeededGenerator { get set }
}

extension SeededModule {
    public var randomState: SeededGenerator {
        get { rng }
        set { rng = newValue }
    }
}

extension Codebook: SeededModule {}
extension VectorQuantizer: SeededModule {}
extension ResidualVQ: SeededModule {}
extension FSQ: SeededModule {}
extension ResidualFSQ: SeededModule {}
extension LFQ: SeededModule {}
extension ResidualLFQ: SeededModule {}
extension ResidualSimVQ: SeededModule {}
