#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public enum FileKind: String, Sendable, Codable {
    case file, directory, symlink, other
}

public struct FileInfo: Sendable, Equatable, Codable {
    public var name: String
    /// Absolute path inside the sandbox.
    public var path: String
    public var kind: FileKind
    public var size: UInt64
    /// Permission bits (e.g. 0o644).
    public var mode: UInt32
    public var modifiedAt: Date

    public init(name: String, path: String, kind: FileKind, size: UInt64, mode: UInt32, modifiedAt: Date) {
        self.name = name
        self.path = path
        self.kind = kind
        self.size = size
        self.mode = mode
        self.modifiedAt = modifiedAt
    }
}

/// A stream of file content in chunks; the producer is told to stop when the
/// consumer does.
public typealias ByteChunks = AsyncThrowingStream<[UInt8], any Error>
