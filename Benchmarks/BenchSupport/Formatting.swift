#if canImport(Glibc)
import Glibc
#endif

/// `value` with `decimals` digits after the point, rounded half away from zero (no Foundation).
public func fixed(_ value: Double, _ decimals: Int = 1) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int64((abs(value) * scale).rounded())
    let whole = scaled / Int64(scale)
    var text = (value < 0 && scaled != 0 ? "-" : "") + String(whole)
    if decimals > 0 {
        let fraction = String(scaled % Int64(scale))
        text += "." + String(repeating: "0", count: decimals - fraction.count) + fraction
    }
    return text
}

/// A ratio as a whole percentage: 0.734 is "73%".
public func percent(_ ratio: Double) -> String { fixed(ratio * 100, 0) + "%" }

/// A goal's verdict: "met" or "NOT MET".
public func verdict(_ met: Bool) -> String { met ? "met" : "NOT MET" }

/// `text` left-aligned in `width` columns (spaces after it).
public func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

/// `text` right-aligned in `width` columns (spaces before it).
public func lpad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

/// The three load averages of /proc/loadavg ("0.52 0.31 0.20"), to judge how shared the machine was.
public func loadAverage() -> String {
    let fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "?" }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 128)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard count > 0 else { return "?" }
    return String(decoding: buffer[0..<count], as: UTF8.self).split(separator: " ").prefix(3).joined(separator: " ")
}
