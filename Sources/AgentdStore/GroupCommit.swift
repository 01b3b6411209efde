import GRDB
import Synchronization

/// Group commit: every write of the daemon goes through here.  Writes that
/// arrive while a transaction is being committed wait, then all of them run
/// in the next transaction and share one fsync.  If one of them fails, that
/// transaction is rolled back and the batch runs again with a savepoint per
/// job, so one failing write rolls back only itself.  With synchronous=FULL
/// every answered write is on disk, and throughput grows with concurrency
/// instead of being capped at one fsync per write.
final class GroupCommit: Sendable {
    private struct Job: Sendable {
        let work: @Sendable (Database) throws -> any Sendable
        let done: @Sendable (Result<any Sendable, any Error>) -> Void
    }

    private let pool: DatabasePool
    /// Runs at the end of every batch's transaction (Store moves recent
    /// events there); its failure is its own and fails no write.
    private let afterBatch: @Sendable (Database) throws -> Void
    private let queue = Mutex<(jobs: [Job], draining: Bool)>(([], false))
    /// Upper bound of writes in one transaction.
    private let maxBatch = 512

    init(pool: DatabasePool, afterBatch: @escaping @Sendable (Database) throws -> Void = { _ in }) {
        self.pool = pool
        self.afterBatch = afterBatch
    }

    func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let result: any Sendable = try await withCheckedThrowingContinuation { continuation in
            let job = Job(work: { db in try work(db) }, done: { continuation.resume(with: $0) })
            let start = queue.withLock { q -> Bool in
                q.jobs.append(job)
                if q.draining { return false }
                q.draining = true
                return true
            }
            if start {
                Task.detached(priority: .high) { await self.drain() }
            }
        }
        guard let typed = result as? T else { throw StoreError.internal("group commit returned the wrong type") }
        return typed
    }

    /// A job of an optimistic batch failed: the batch's transaction is
    /// rolled back and the batch runs again with a savepoint per job.
    private struct BatchFailed: Error {}

    /// Optimistic pass, inside the batch's transaction: every job runs bare.
    /// No savepoint around them: while a savepoint is open SQLite copies
    /// every page it modifies into a sub-journal (a temporary file once it
    /// passes 64 KiB), which doubled the pages written per batch.
    private static func runBare(_ batch: [Job], _ db: Database) throws -> [Result<any Sendable, any Error>] {
        var out: [Result<any Sendable, any Error>] = []
        out.reserveCapacity(batch.count)
        for job in batch {
            do {
                out.append(.success(try job.work(db)))
            } catch {
                throw BatchFailed()
            }
        }
        return out
    }

    /// After a failure: each job in its own savepoint, so one job's failure
    /// undoes only itself.
    private static func runIsolated(_ batch: [Job], _ db: Database) throws -> [Result<any Sendable, any Error>] {
        var out: [Result<any Sendable, any Error>] = []
        out.reserveCapacity(batch.count)
        for job in batch {
            var value: (any Sendable)? = nil
            do {
                try db.inSavepoint {
                    value = try job.work(db)
                    return .commit
                }
                out.append(.success(value ?? ()))
            } catch {
                out.append(.failure(error))
            }
        }
        return out
    }

    /// One transaction for the batch, bare or a savepoint per job, with
    /// `afterBatch` at its end.
    private func commit(_ batch: [Job], isolated: Bool) async throws -> [Result<any Sendable, any Error>] {
        try await pool.write { db in
            let results = isolated ? try Self.runIsolated(batch, db) : try Self.runBare(batch, db)
            try? self.afterBatch(db)
            return results
        }
    }

    private func drain() async {
        while true {
            let batch = queue.withLock { q -> [Job] in
                let n = min(q.jobs.count, maxBatch)
                let b = Array(q.jobs.prefix(n))
                q.jobs.removeFirst(n)
                if b.isEmpty { q.draining = false }
                return b
            }
            if batch.isEmpty { return }
            let results: [Result<any Sendable, any Error>]
            do {
                do {
                    results = try await commit(batch, isolated: false)
                } catch is BatchFailed {
                    results = try await commit(batch, isolated: true)
                }
            } catch {
                results = batch.map { _ in .failure(error) }
            }
            for (job, result) in zip(batch, results) { job.done(result) }
        }
    }
}
