import AgentdModel
import GRDBSQLite
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Read-only SQLite connections used without GRDB, for the single-row
/// lookups on the API's hottest path.  GRDB runs every read through a
/// reader pool (a lock and a semaphore) and a serial dispatch queue; for a
/// one-row primary-key lookup that was as much CPU as the lookup itself
/// (`perf`: ~7 % of a GET /v1/sessions/{id}).  Here a request borrows a
/// connection from a free list under one uncontended lock, steps a statement
/// prepared once per connection, and gives it back.
///
/// Each statement runs in its own implicit read transaction of WAL mode:
/// it sees the last commit and never blocks the writer.  Everything else,
/// and every write, goes through GRDB.
final class FastReads: Sendable {
    private let path: String
    private let free = Mutex<[Connection]>([])
    /// Idle connections kept (one per event loop thread is the usual need).
    private let keep = 8

    init(path: String) {
        self.path = path
    }

    final class Connection: @unchecked Sendable {
        let db: OpaquePointer
        let sessionByID: OpaquePointer

        init(path: String) throws {
            var handle: OpaquePointer?
            let flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX
            guard sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
                let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
                sqlite3_close_v2(handle)
                throw StoreError.internal("cannot open \(path) for reading: \(message)")
            }
            sqlite3_busy_timeout(handle, 5000)
            var statement: OpaquePointer?
            guard sqlite3_prepare_v3(handle, Store.sessionByIDSQL, -1, UInt32(SQLITE_PREPARE_PERSISTENT),
                                     &statement, nil) == SQLITE_OK, let statement else {
                let message = String(cString: sqlite3_errmsg(handle))
                sqlite3_close_v2(handle)
                throw StoreError.internal("cannot prepare the session lookup: \(message)")
            }
            db = handle
            sessionByID = statement
        }

        deinit {
            sqlite3_finalize(sessionByID)
            sqlite3_close_v2(db)
        }

        func error(_ what: String) -> StoreError {
            StoreError.internal("\(what): \(String(cString: sqlite3_errmsg(db)))")
        }
    }

    private func withConnection<T>(_ body: (Connection) throws -> T) throws -> T {
        let connection = try free.withLock { $0.popLast() } ?? Connection(path: path)
        defer {
            free.withLock { list in
                if list.count < keep { list.append(connection) }
            }
        }
        return try body(connection)
    }

    /// `Store.sessionByIDSQL`, read as `Store.session(_:)` reads it.
    func session(id: String, teamID: String?) throws -> Session? {
        try withConnection { c in
            let st = c.sessionByID
            defer {
                sqlite3_reset(st)
                sqlite3_clear_bindings(st)
            }
            let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
            sqlite3_bind_text(st, 1, id, -1, transient)
            if let teamID {
                sqlite3_bind_text(st, 2, teamID, -1, transient)
                sqlite3_bind_text(st, 3, teamID, -1, transient)
            }
            switch sqlite3_step(st) {
            case SQLITE_DONE:
                return nil
            case SQLITE_ROW:
                func text(_ i: Int32) -> String {
                    guard let p = sqlite3_column_text(st, i) else { return "" }
                    return String(decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(st, i))),
                                  as: UTF8.self)
                }
                return Session(
                    id: text(0), teamID: text(1), agentID: text(2), title: text(3), status: text(4),
                    sandboxState: text(5), lastSeq: sqlite3_column_int64(st, 6),
                    activeRunID: sqlite3_column_type(st, 7) == SQLITE_NULL ? nil : text(7),
                    usage: Usage(promptTokens: Int(sqlite3_column_int64(st, 8)),
                                 completionTokens: Int(sqlite3_column_int64(st, 9)),
                                 costUSD: sqlite3_column_double(st, 10)),
                    createdAt: Timestamp.date(millis: sqlite3_column_int64(st, 11)),
                    updatedAt: Timestamp.date(millis: sqlite3_column_int64(st, 12)))
            default:
                throw c.error("reading session \(id)")
            }
        }
    }
}
