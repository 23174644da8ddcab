import VQNN
import VQTensor

// The quantizers' random generators, saved and restored by resumable training (`Module.randomStates()`).

extension Codebook: RandomStateOwner {
    public var randomState: SeededGenerator { get { rng } set { rng = newValue } }
}

extension VectorQuantizer: RandomStateOwner {
    public var randomState: SeededGenerator { get { rng } set { rng = newValue } }
}

extension ResidualVQ: RandomStateOwner {
    public var randomState: SeededGenerator { get { rng } set { rng = newValue } }
}

extension FSQ: RandomStateOwner {
    public var randomState: SeededGenerator { get { rng } set { rng = newValue } }
}

extension ResidualFSQ: RandomStateOwner {
    public var randomState: SeededGenerator { get { rng } set { rng = newValue } }
}

extension LFQ: RandomStateOwner {
    public var randomState: SeededGenerator { get { rng } set { rng = newValue } }
}

extension ResidualLFQ: RandomStateOwner {
    public var randomState: SeededGenerator { get { rng } set { rng = newValue } }
}
