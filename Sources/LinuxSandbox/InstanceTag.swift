#if canImport(Glibc)
import Glibc
#endif

/// The name of one agentd among the others on the host (a second daemon,
/// `agentd sandbox run`, the tests, the benchmarks): every host resource
/// that is not under the state directory and could be mistaken for another
/// instance's (warm shells' and spare cgroups, warm shells' sockets) carries
/// it, so that recovery adopts, reaps and removes only its own.  Sandboxes'
/// own cgroups are named by their ids, and an instance knows its ids from
/// its state directory.
///
/// It is derived from the state directory, which one agentd holds at a time
/// (`StateDirectoryLock`): 12 hex digits of a 64-bit FNV-1a hash of its
/// canonical path, the same on every start.
enum InstanceTag {
    static func of(stateDirectory: String) -> String {
        var path = stateDirectory
        if let resolved = realpath(stateDirectory, nil) {
            path = String(cString: resolved)
            free(resolved)
        }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in path.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return String((String(repeating: "0", count: max(0, 16 - hex.count)) + hex).prefix(12))
    }
}
