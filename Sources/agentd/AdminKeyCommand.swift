import AgentdCore
import AgentdModel
import AgentdStore
import ArgumentParser
import Foundation
import Logging

/// `agentd admin-key`: mint a new admin key on the host, for the operator
/// who lost theirs or revoked them all.  Works with the daemon running (the
/// database is SQLite in WAL mode: the daemon sees the new key on its next
/// lookup) or stopped.  Reaching the state directory as root is the proof of
/// authority, as it is for the first key agentd writes there.
struct AdminKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin-key",
        abstract: "Mint a new admin key and write it to STATE/admin.key (root; the daemon may be running).",
        discussion: """
            An existing admin.key is kept beside it as admin.key.<time>.old (its key, if still active, keeps \
            working). Revoke keys you no longer trust with `agentctl keys revoke`.
            """)

    @OptionGroup var state: StateOptions

    func run() async throws {
        guard geteuid() == 0 else { fail("admin-key must run as root (it writes STATE/admin.key, mode 0600)") }
        let dir = state.resolvedStateDir
        let db = dir + "/agentd.db"
        guard FileManager.default.fileExists(atPath: db) else {
            fail("no database at \(db): is \(dir) an agentd state directory? (a first start creates the admin key itself)")
        }
        var logger = Logger(label: "agentd.admin-key")
        logger.logLevel = .warning
        let path = dir + "/admin.key"
        do {
            let store = try Store(path: db, logger: logger)
            if FileManager.default.fileExists(atPath: path) {
                let aside = path + ".\(Int(Date().timeIntervalSince1970)).old"
                guard rename(path, aside) == 0 else { fail("cannot move the old \(path) aside: \(String(cString: strerror(errno)))") }
                print("the previous key file was moved to \(aside)")
            }
            let info = try await AuthService(store: store, logger: logger)
                .mintAdminKey(path: path, detail: "minted on the host by agentd admin-key")
            print("minted admin key \(info.id); written to \(path) (mode 0600)")
        } catch let e as StoreError {
            fail("database: \(e.description)")
        } catch let e as AgentdError {
            fail(e.message)
        }
    }
}
