import GRDB
import Synchronization

/// Group commit: every write of the daemon goes through here.  Writes that
/// arrive while a transaction is being committed wait, then all of them run
/// in the next transaction, each in its own savepoint (one failing rolls back
/// only itself), and share one fsync.  With synchronous=FULL every answered
/// write is on disk, and throughput grows with concurrency instead of being
/// capped at one fsync per write.
final class GroupCommit: Sendable {
    private struct Job: Sendable {
        let work: @Sendable (Database) throws -> any Sendable
        let done: @Sendable (Result<any Sendable, any Error>) -> Void
    }

    private let pool: DatabasePool
    private let queue = Mutex<(jobs: [Job], draining: Bool)>(([], false))
    /// Upper bound of writes in one transaction.
    private let maxBatch = 512

    init(pool: DatabasePool) {
        self.pool = pool
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

    /// Inside the batch's transaction.  Optimistic first: every job runs
    /// bare (no savepoint statements, the common case); if one fails, the
    /// whole transaction is rolled back to its start and the jobs run again,
    /// each in its own savepoint, so one job's failure undoes only itself.
    private static func run(_ batch: [Job], _ db: Database) throws -> [Result<any Sendable, any Error>] {
        if batch.count > 1 {
            var fast: [Result<any Sendable, any Error>] = []
            fast.reserveCapacity(batch.count)
            var failed = false
            try db.inSavepoint {
                for job in batch {
                    do {
                        fast.append(.success(try job.work(db)))
                    } catch {
                        failed = true
                        return .rollback
                    }
                }
                return .commit
            }
            if !failed { return fast }
        }
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
                results = try await pool.write { db in try Self.run(batch, db) }
            } catch {
                results = batch.map { _ in .failure(error) }
            }
            for (job, result) in zip(batch, results) { job.done(result) }
        }
    }
}
