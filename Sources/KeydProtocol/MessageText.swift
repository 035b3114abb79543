/// Quotes untrusted, non-secret text for an error message: at most 64 characters, and control
/// characters, quotes and backslashes escaped so a message stays one printable line.
public func quotedForMessage(_ text: String) -> String {
    let limit = 64
    var out = "'"
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit {
            out += "…"
            break
        }
        count += 1
        switch scalar.value {
        case 0x27: out += "\\'"
        case 0x5C: out += "\\\\"
        case 0..<0x20, 0x7F...0x9F:
            out += "\\u{" + String(scalar.value, radix: 16) + "}"
        default:
            out.unicodeScalars.append(scalar)
        }
    }
    return out + "'"
}
