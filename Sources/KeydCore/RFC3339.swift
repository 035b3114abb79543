/// RFC 3339 timestamps in UTC with whole seconds, e.g. `2026-11-25T13:50:41Z`.
public enum RFC3339 {
    /// Seconds since the epoch that format to a four-digit year: 0000-01-01T00:00:00Z…9999-12-31T23:59:59Z.
    public static let representableSeconds: ClosedRange<Int64> = -62_167_219_200...253_402_300_799

    /// Formats `secondsSinceEpoch` (inside ``representableSeconds``; a clock outside it is our bug).
    public static func format(secondsSinceEpoch: Int64) -> String {
        precondition(
            representableSeconds.contains(secondsSinceEpoch),
            "time \(secondsSinceEpoch) outside RFC 3339 years 0000…9999"
        )
        let (days, secondOfDay) = floorDivide(secondsSinceEpoch, 86_400)
        let (year, month, day) = civil(fromDays: days)
        var out = ""
        out.reserveCapacity(20)
        append(year, width: 4, to: &out)
        out += "-"
        append(month, width: 2, to: &out)
        out += "-"
        append(day, width: 2, to: &out)
        out += "T"
        append(secondOfDay / 3600, width: 2, to: &out)
        out += ":"
        append(secondOfDay / 60 % 60, width: 2, to: &out)
        out += ":"
        append(secondOfDay % 60, width: 2, to: &out)
        out += "Z"
        return out
    }

    /// Year, month (1…12) and day (1…31) of the day `days` after 1970-01-01, proleptic Gregorian.
    ///
    /// Howard Hinnant's `civil_from_days` (https://howardhinnant.github.io/date_algorithms.html).
    static func civil(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468  // days since 0000-03-01
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097  // 0…146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365  // 0…399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // 0…365, from March 1
        let shiftedMonth = (5 * dayOfYear + 2) / 153  // 0…11, March = 0
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    /// Quotient rounded down and a non-negative remainder.
    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let remainder = value % divisor
        return remainder < 0 ? (value / divisor - 1, remainder + divisor) : (value / divisor, remainder)
    }

    /// Appends a non-negative `value` left-padded with zeros to `width` digits.
    private static func append(_ value: Int64, width: Int, to out: inout String) {
        let digits = String(value)
        if digits.count < width {
            out += String(repeating: "0", count: width - digits.count)
        }
        out += digits
    }
}
