//! Resource quantities, as much of `k8s.io/apimachinery/pkg/api/resource` as the kubelet's
//! decisions need: parsing (`ParseQuantity`), `Value()` and `MilliValue()` (both rounding
//! up), sign and comparison. Amounts are kept exactly in units of 10⁻⁹.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const NANO: i128 = 1_000_000_000;

/// Why a quantity string was refused (upstream: `resource.ErrFormatWrong`, `ErrSuffix`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantity {0:?} must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format(String),
    #[error("quantity {0:?} has an unknown suffix")]
    Suffix(String),
}

/// A parsed quantity: its exact amount in units of 10⁻⁹, rounded up below that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Amount(i128);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// Upstream `Quantity.Value()`: the amount rounded up to an integer.
    pub fn value(self) -> i64 {
        saturate(div_ceil(self.0, NANO))
    }

    /// Upstream `Quantity.MilliValue()`: the amount in thousandths, rounded up.
    pub fn milli_value(self) -> i64 {
        saturate(div_ceil(self.0, NANO / 1000))
    }

    /// Upstream `Quantity.Sign()`.
    pub fn sign(self) -> i32 {
        self.0.signum() as i32
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Upstream `Quantity.Add`.
    pub fn plus(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0)
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Parses a quantity string: `<sign><digits>[.<digits>]<suffix>`, the suffix a binary SI one
/// (`Ki` … `Ei`), a decimal SI one (`n`, `u`, `m`, ``, `k`, `M`, `G`, `T`, `P`, `E`) or a
/// decimal exponent (`e3`, `E-2`) (upstream: `resource.ParseQuantity`).
pub fn parse_quantity(s: &str) -> Result<Amount, QuantityError> {
    let format = || QuantityError::Format(s.to_string());
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(format());
    }
    let (pow2, pow10): (u32, i64) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        exp if exp.len() > 1 && (exp.starts_with('e') || exp.starts_with('E')) => {
            (0, exp[1..].parse::<i64>().map_err(|_| format())?)
        }
        _ => return Err(QuantityError::Suffix(s.to_string())),
    };
    let digits = format!("{whole}{frac}");
    let digits = digits.trim_start_matches('0');
    let mantissa: i128 = if digits.is_empty() {
        0
    } else if digits.len() > 38 {
        i128::MAX
    } else {
        digits.parse().map_err(|_| format())?
    };
    let exponent = pow10 - frac.len() as i64 + 9;
    let scaled = mantissa.checked_mul(1i128 << pow2).unwrap_or(i128::MAX);
    let nanos = if exponent >= 0 {
        u32::try_from(exponent)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
            .and_then(|p| scaled.checked_mul(p))
            .unwrap_or(if scaled == 0 { 0 } else { i128::MAX })
    } else {
        match u32::try_from(-exponent)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
        {
            Some(p) => div_ceil(scaled, p),
            None => i128::from(scaled != 0),
        }
    };
    Ok(Amount(if negative { -nanos } else { nanos }))
}

/// The amount of an API quantity; an unparsable one counts as zero (the apiserver
/// validates quantities before the agent sees them). Only for reporting (the status's
/// resources): what sets a cgroup limit or a variable uses [`parse_quantity`] and refuses
/// a quantity it cannot read.
pub fn amount(q: &Quantity) -> Amount {
    parse_quantity(&q.0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_quantity_table() {
        for (input, value, milli) in [
            ("0", 0, 0),
            ("1", 1, 1000),
            ("100m", 1, 100),
            ("1500m", 2, 1500),
            ("0.5", 1, 500),
            ("2k", 2000, 2_000_000),
            ("1Ki", 1024, 1_024_000),
            ("128Mi", 134_217_728, 134_217_728_000),
            ("1G", 1_000_000_000, 1_000_000_000_000),
            ("1e3", 1000, 1_000_000),
            ("1E-3", 1, 1),
            ("-1", -1, -1000),
            ("1n", 1, 1),
        ] {
            let a = parse_quantity(input).unwrap();
            assert_eq!((a.value(), a.milli_value()), (value, milli), "{input}");
        }
        assert!(matches!(
            parse_quantity("abc"),
            Err(QuantityError::Format(_))
        ));
        assert!(matches!(
            parse_quantity("1X"),
            Err(QuantityError::Suffix(_))
        ));
        assert!(matches!(parse_quantity(""), Err(QuantityError::Format(_))));
        assert_eq!(parse_quantity("1.2.3").ok(), None);
    }

    #[test]
    fn sign_and_sum() {
        assert_eq!(parse_quantity("0").unwrap().sign(), 0);
        assert_eq!(parse_quantity("-2m").unwrap().sign(), -1);
        let sum = parse_quantity("500m")
            .unwrap()
            .plus(parse_quantity("0.5").unwrap());
        assert_eq!(sum, parse_quantity("1").unwrap());
    }
}
