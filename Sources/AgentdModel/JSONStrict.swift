/// What Foundation's JSON decoders let through and agentd refuses: an object
/// with the same key twice (the decoders keep the last one silently, so two
/// readers of one body could disagree on what it says) and nesting deeper
/// than a request needs.  Foundation has no option for either, so this scan
/// runs over the bytes first; the decoder then checks everything else.  The
/// scan assumes nothing about validity: on malformed input it may return
/// nil, and the decoder refuses the body.
public enum JSONStrict {
    public enum Problem: Equatable, Sendable {
        case duplicateKey(path: String, key: String)
        case tooDeep(Int)
    }

    private enum Frame {
        case array
        case object(keys: Set<String>, expectingKey: Bool, path: String)
    }

    /// The keys of the body's objects at depth 1 and 2, by path ("" for
    /// the body itself, "sandbox" for an object under the key "sandbox"),
    /// so that unknown fields are found without decoding the body twice.
    public struct Scan: Sendable {
        public var problem: Problem?
        public var keys: [String: [String]] = [:]
    }

    public static func check(_ bytes: [UInt8], maxDepth: Int = 32) -> Problem? {
        scan(bytes, maxDepth: maxDepth).problem
    }

    public static func scan(_ bytes: [UInt8], maxDepth: Int = 32) -> Scan {
        bytes.withUnsafeBytes { scan($0, maxDepth: maxDepth) }
    }

    /// Scans the bytes where they are (a request body is not copied for it).
    public static func scan(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 32) -> Scan {
        var result = Scan()
        var stack: [Frame] = []
        var lastKey = ""
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            switch b {
            case UInt8(ascii: "{"):
                guard stack.count < maxDepth else { result.problem = .tooDeep(maxDepth); return result }
                stack.append(.object(keys: [], expectingKey: true, path: childPath(stack, lastKey)))
            case UInt8(ascii: "["):
                guard stack.count < maxDepth else { result.problem = .tooDeep(maxDepth); return result }
                stack.append(.array)
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if !stack.isEmpty { stack.removeLast() }
            case UInt8(ascii: ","):
                if case .object(let keys, _, let path)? = stack.last {
                    stack[stack.count - 1] = .object(keys: keys, expectingKey: true, path: path)
                }
            case UInt8(ascii: "\""):
                // Only keys are decoded; a value (a 16 MiB stdin) is skipped.
                guard case .object(var keys, true, let path)? = stack.last else {
                    guard let end = stringEnd(bytes, from: i) else { return result }
                    i = end + 1
                    continue
                }
                guard let (end, text) = string(bytes, from: i) else { return result }
                guard keys.insert(text).inserted else {
                    result.problem = .duplicateKey(path: path, key: text)
                    return result
                }
                stack[stack.count - 1] = .object(keys: keys, expectingKey: false, path: path)
                lastKey = text
                if stack.count <= 2 { result.keys[path, default: []].append(text) }
                i = end
            default:
                break
            }
            i += 1
        }
        return result
    }

    /// The dotted path of an object about to open inside `stack`.
    private static func childPath(_ stack: [Frame], _ key: String) -> String {
        guard case .object(_, _, let parent)? = stack.last else {
            if case .array? = stack.last { return "[]" }
            return ""
        }
        return parent.isEmpty ? key : parent + "." + key
    }

    /// The string starting at the quote at `start`: the index of its closing
    /// quote and its decoded text (escapes resolved, so that "a" and "\u0061"
    /// are the same key, as they are to the decoder).
    private static func string(_ bytes: UnsafeRawBufferPointer, from start: Int) -> (Int, String)? {
        var out: [UInt8] = []
        var i = start + 1
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") { return (i, String(decoding: out, as: UTF8.self)) }
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                i += 1
                continue
            }
            guard i + 1 < bytes.count else { return nil }
            let e = bytes[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                guard let (scalar, next) = unicodeEscape(bytes, at: i) else { return nil }
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
                i = next
            default: out.append(e)  // \" \\ \/
            }
        }
        return nil
    }

    /// The index of the closing quote of the string starting at `start`.
    private static func stringEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var i = start + 1
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "\""): return i
            case UInt8(ascii: "\\"): i += 2
            default: i += 1
            }
        }
        return nil
    }

    /// `XXXX` (after `\u`) at `i`, joined with a following low surrogate.
    private static func unicodeEscape(_ bytes: UnsafeRawBufferPointer, at i: Int) -> (Unicode.Scalar, Int)? {
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= bytes.count else { return nil }
            return UInt32(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[at..<at + 4]), as: UTF8.self), radix: 16)
        }
        guard let high = hex4(i) else { return nil }
        if (0xD800..<0xDC00).contains(high), i + 10 <= bytes.count, bytes[i + 4] == UInt8(ascii: "\\"),
           bytes[i + 5] == UInt8(ascii: "u"), let low = hex4(i + 6), (0xDC00..<0xE000).contains(low) {
            let v = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            return Unicode.Scalar(v).map { ($0, i + 10) }
        }
        // A lone surrogate decodes to U+FFFD, as Foundation does.
        return (Unicode.Scalar(high) ?? "\u{FFFD}", i + 4)
    }
}
