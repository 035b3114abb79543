// The test bundle links swift-corelibs-foundation, which exports its own `uuid_unparse` (uppercase)
// and is loaded before libuuid; libcryptsetup writes a new header's UUID with `uuid_unparse`, so
// images formatted in this process would get an uppercase UUID, which keyd's header check refuses.
// keyd links no full Foundation and gets libuuid's lowercase one. Defined here, in the executable,
// this comes first for every library of the test process and gives libuuid's lowercase text back.

/// libuuid's `uuid_unparse`: 16 bytes as lowercase 8-4-4-4-12 text and a NUL, into `out` (37 bytes).
@_cdecl("uuid_unparse")
func lowercaseUUIDUnparse(_ uuid: UnsafePointer<UInt8>, _ out: UnsafeMutablePointer<CChar>) {
    let digits = Array("0123456789abcdef".utf8)
    var position = 0
    for index in 0..<16 {
        if [4, 6, 8, 10].contains(index) {
            out[position] = CChar(UInt8(ascii: "-"))
            position += 1
        }
        out[position] = CChar(digits[Int(uuid[index] >> 4)])
        out[position + 1] = CChar(digits[Int(uuid[index] & 0x0F)])
        position += 2
    }
    out[position] = 0
}
