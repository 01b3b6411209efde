import CAgentdSandbox
#if canImport(Glibc)
import Glibc
#endif

/// Owns the C memory of one spawn configuration (strings, arrays) and frees
/// it all at once.  Everything the clone child reads lives here and stays
/// untouched until the child has exec'd (`agentd_spawn_finish`, a warm claim's finish).
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit {
        for b in blocks { free(b) }
    }

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    func optionalString(_ s: String?) -> UnsafeMutablePointer<CChar>? {
        s.map(string)
    }

    /// A NULL-terminated `char *const[]`.
    func stringArray(_ items: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let p = allocate(UnsafeMutablePointer<CChar>?.self, count: items.count + 1)
        for (i, s) in items.enumerated() { p[i] = string(s) }
        p[items.count] = nil
        return p
    }

    func array<T>(_ items: [T]) -> UnsafeMutablePointer<T> {
        let p = allocate(T.self, count: max(items.count, 1))
        for (i, x) in items.enumerated() { (p + i).initialize(to: x) }
        return p
    }

    private func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = calloc(count, MemoryLayout<T>.stride)!
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }
}
