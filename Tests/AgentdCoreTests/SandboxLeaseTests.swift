import Synchronization
import Testing
@testable import AgentdCore

/// The one owner of "in use": the idle stopper and the holders of leases.
@Suite struct SandboxLeaseTests {
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        func bump() { value.add(1, ordering: .relaxed) }
        var count: Int { value.load(ordering: .relaxed) }
    }

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set(_ v: Bool = true) { value.store(v, ordering: .sequentiallyConsistent) }
        var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
    }

    @Test func aSandboxFirstSeenGetsAWholeIdlePeriod() async {
        let leases = SandboxLeases()
        let stops = Counter()
        #expect(await leases.stopIfIdle("s", idleFor: .zero) { stops.bump() } == false)
        try? await Task.sleep(for: .milliseconds(5))
        #expect(await leases.stopIfIdle("s", idleFor: .zero) { stops.bump() } == true)
        #expect(stops.count == 1)
    }

    @Test func aHeldSandboxIsNeverStoppedAndAReleasedOneIs() async {
        let leases = SandboxLeases()
        let stops = Counter()
        let a = await leases.acquire("s")
        let b = await leases.acquire("s")
        try? await Task.sleep(for: .milliseconds(5))
        #expect(await leases.stopIfIdle("s", idleFor: .zero) { stops.bump() } == false)
        await a.release()
        await a.release()  // once only: b still holds it
        #expect(await leases.holders("s") == 1)
        #expect(await leases.stopIfIdle("s", idleFor: .zero) { stops.bump() } == false)
        await b.release()
        #expect(await leases.holders("s") == 0)
        try? await Task.sleep(for: .milliseconds(5))
        #expect(await leases.stopIfIdle("s", idleFor: .zero) { stops.bump() } == true)
        #expect(stops.count == 1)
    }

    @Test func recentUseCountsAsUseUntilTheIdlePeriodPasses() async {
        let leases = SandboxLeases()
        await leases.acquire("s").release()
        #expect(await leases.stopIfIdle("s", idleFor: .seconds(60)) {} == false)
        await leases.touch("s")
        #expect(await leases.stopIfIdle("s", idleFor: .seconds(60)) {} == false)
    }

    /// A lease asked for while an idle stop runs waits for the stop: it
    /// never gets a sandbox that is being stopped under it.
    @Test func aLeaseAskedForDuringAStopWaitsForIt() async {
        let leases = SandboxLeases()
        await leases.acquire("s").release()
        try? await Task.sleep(for: .milliseconds(5))
        let stopped = Flag()
        let gotLeaseAfterStop = Flag()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                _ = await leases.stopIfIdle("s", idleFor: .zero) {
                    try? await Task.sleep(for: .milliseconds(200))
                    stopped.set()
                }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(50))
                let lease = await leases.acquire("s")
                gotLeaseAfterStop.set(stopped.isSet)
                await lease.release()
            }
        }
        #expect(gotLeaseAfterStop.isSet)
    }

    @Test func aDroppedLeaseIsReleased() async {
        let leases = SandboxLeases()
        do { _ = await leases.acquire("s") }
        for _ in 0..<100 where await leases.holders("s") > 0 {
            try? await Task.sleep(for: .milliseconds(10))
        }
        #expect(await leases.holders("s") == 0)
    }

    @Test func forgettingKeepsAHeldSandbox() async {
        let leases = SandboxLeases()
        let lease = await leases.acquire("s")
        await leases.forget("s")
        #expect(await leases.holders("s") == 1)
        await lease.release()
        await leases.forget("s")
        #expect(await leases.lastUse("s") == nil)
    }
}
