//! The host's risk rails. Every order intent passes [`check`] before any
//! broker call, whatever the rule plugin says: a plugin cannot loosen them.
//! They are on by default ([`RiskLimits::default`]) and loosened only by an
//! explicit `[risk]` table in the config. Pure functions over a snapshot, so
//! they are property-tested.
//!
//! Exits (`reduce_only` intents that really reduce the position) pass the
//! size, notional, price-band and rate rails, each bypass recorded; nothing
//! passes the kill switch except reduce-only orders in `reduce_only` mode.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::order::{OrderIntent, OrderType, Side};

/// The kill switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillSwitch {
    /// Orders flow.
    Off,
    /// No order reaches a broker.
    On,
    /// Only orders that reduce a position reach a broker.
    ReduceOnly,
}

impl KillSwitch {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::ReduceOnly => "reduce_only",
        }
    }

    /// How much it stops: `off` < `reduce_only` < `on`.
    pub fn strictness(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::ReduceOnly => 1,
            Self::On => 2,
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "on" => Self::On,
            "reduce_only" | "reduce-only" => Self::ReduceOnly,
            _ => return None,
        })
    }
}

/// The rails; `None` disables one (only by explicit config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskLimits {
    /// Symbols that may be traded (upper-case); `None` allows any.
    pub symbols: Option<Vec<String>>,
    /// Largest quantity of one order.
    pub max_order_quantity: Option<Decimal>,
    /// Largest quantity × price of one order. Needs a price: an order with
    /// no limit, stop or reference price fails closed.
    pub max_order_notional: Option<Decimal>,
    /// Largest absolute position per symbol after the order. Needs the
    /// broker's positions: when they are unknown the order fails closed.
    pub max_position: Option<Decimal>,
    /// Orders sent to brokers in the last 60 s.
    pub max_orders_per_minute: Option<u32>,
    /// Orders sent to brokers since 00:00 UTC.
    pub max_orders_per_day: Option<u32>,
    /// Limit and stop prices within this many percent of the reference price.
    pub price_band_pct: Option<Decimal>,
    /// Realized loss since 00:00 UTC after which only orders that reduce a
    /// position pass.
    pub max_daily_loss: Option<Decimal>,
    /// When new positions may be opened (exits pass at any time).
    pub trading_hours: Option<TradingHours>,
}

/// A weekly trading window in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TradingHours {
    /// IANA time zone, e.g. `America/New_York`.
    pub timezone: String,
    /// Days (`mon` … `sun`).
    pub days: Vec<String>,
    /// Opening time, minutes after midnight.
    pub start_min: u16,
    /// Closing time, minutes after midnight (exclusive).
    pub end_min: u16,
}

impl TradingHours {
    /// Whether `now_ns` (UTC) falls in the window; `Err` with the local
    /// time when it does not.
    pub fn check(&self, now_ns: i64) -> Result<(), String> {
        let tz = jiff::tz::TimeZone::get(&self.timezone).map_err(|e| format!("time zone {}: {e}", self.timezone))?;
        let ts = jiff::Timestamp::from_nanosecond(i128::from(now_ns)).map_err(|e| e.to_string())?;
        let local = ts.to_zoned(tz);
        let day = local.strftime("%a").to_string().to_ascii_lowercase();
        let minute = u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let open = self.days.contains(&day) && minute >= self.start_min && minute < self.end_min;
        if open {
            Ok(())
        } else {
            Err(local.strftime("%a %H:%M %Z").to_string())
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:02}:{:02}–{:02}:{:02} {} on {}",
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60,
            self.timezone,
            self.days.join(", ")
        )
    }
}

impl Default for RiskLimits {
    /// Conservative defaults for a single trader's account; see the README.
    fn default() -> Self {
        Self {
            symbols: None,
            max_order_quantity: Some(Decimal::from(1_000)),
            max_order_notional: Some(Decimal::from(100_000)),
            max_position: Some(Decimal::from(10_000)),
            max_orders_per_minute: Some(30),
            max_orders_per_day: Some(500),
            price_band_pct: Some(Decimal::from(10)),
            max_daily_loss: None,
            trading_hours: None,
        }
    }
}

/// A rail (for audit rows and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rail {
    /// The kill switch.
    KillSwitch,
    /// A reduce-only order that would not reduce.
    ReduceOnly,
    /// `risk.symbols`.
    SymbolAllowlist,
    /// `risk.max_order_quantity`.
    MaxOrderQuantity,
    /// `risk.max_order_notional`.
    MaxOrderNotional,
    /// `risk.price_band_pct`.
    PriceBand,
    /// `risk.max_position`.
    MaxPosition,
    /// `risk.max_orders_per_minute`.
    OrdersPerMinute,
    /// `risk.max_orders_per_day`.
    OrdersPerDay,
    /// `risk.trading_hours`.
    TradingHours,
    /// `risk.max_daily_loss`.
    DailyLoss,
}

impl Rail {
    /// The config key (or name) of the rail.
    pub fn key(self) -> &'static str {
        match self {
            Self::KillSwitch => "kill switch",
            Self::ReduceOnly => "reduce_only",
            Self::SymbolAllowlist => "risk.symbols",
            Self::MaxOrderQuantity => "risk.max_order_quantity",
            Self::MaxOrderNotional => "risk.max_order_notional",
            Self::PriceBand => "risk.price_band_pct",
            Self::MaxPosition => "risk.max_position",
            Self::OrdersPerMinute => "risk.max_orders_per_minute",
            Self::OrdersPerDay => "risk.max_orders_per_day",
            Self::TradingHours => "risk.trading_hours",
            Self::DailyLoss => "risk.max_daily_loss",
        }
    }
}

/// What the rails see of the world when they decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The kill switch.
    pub kill: KillSwitch,
    /// The signed position in the intent's symbol (`None`: unknown).
    pub position: Option<Decimal>,
    /// Orders sent in the last 60 s.
    pub orders_last_minute: u32,
    /// Orders sent since 00:00 UTC.
    pub orders_today: u32,
    /// Realized profit (negative: loss) since 00:00 UTC.
    pub realized_today: Decimal,
    /// Now, UTC nanoseconds.
    pub now_ns: i64,
}

/// The decision for one intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Returns true if and only if the order may go to the broker.
    pub allowed: bool,
    /// The rail that refused it.
    pub rail: Option<Rail>,
    /// Why, in words that say what to change.
    pub reason: Option<String>,
    /// Rails an exit passed without being checked.
    pub bypassed: Vec<Rail>,
}

impl Decision {
    fn deny(rail: Rail, reason: String) -> Self {
        Self {
            allowed: false,
            rail: Some(rail),
            reason: Some(reason),
            bypassed: Vec::new(),
        }
    }
}

fn signed(intent: &OrderIntent) -> Decimal {
    match intent.side {
        Side::Buy => intent.quantity.get(),
        Side::Sell => -intent.quantity.get(),
    }
}

/// The price an order's notional is measured at: its limit, else its stop,
/// else the alert's reference price.
pub fn order_price(intent: &OrderIntent) -> Option<Decimal> {
    match intent.order_type {
        OrderType::Limit { limit } | OrderType::StopLimit { limit, .. } => Some(limit.get()),
        OrderType::Stop { stop } => Some(stop.get()),
        OrderType::Market | OrderType::TrailingStop { .. } => intent.reference_price.map(|p| p.get()),
    }
}

/// Decides whether `intent` may go to the broker.
pub fn check(limits: &RiskLimits, intent: &OrderIntent, s: &Snapshot) -> Decision {
    let qty = intent.quantity.get();
    // Does it reduce the position? Only known positions can say yes.
    let reduces = s
        .position
        .is_some_and(|p| !p.is_zero() && (p.is_sign_positive() != signed(intent).is_sign_positive()) && qty <= p.abs());
    let exit = intent.reduce_only;

    match s.kill {
        KillSwitch::On => {
            return Decision::deny(
                Rail::KillSwitch,
                "the kill switch is on: no order reaches a broker (turn it off with `algobanana kill-switch off`)"
                    .into(),
            );
        }
        KillSwitch::ReduceOnly if !(exit && reduces) => {
            return Decision::deny(
                Rail::KillSwitch,
                "the kill switch is in reduce-only mode: only orders that reduce an open position pass".into(),
            );
        }
        _ => {}
    }
    if exit && s.position.is_some() && !reduces {
        return Decision::deny(
            Rail::ReduceOnly,
            format!(
                "a reduce-only order must reduce the open position ({} {}), and this one would not",
                s.position.unwrap_or_default(),
                intent.symbol.as_str()
            ),
        );
    }
    if let Some(allowed) = &limits.symbols
        && !allowed.iter().any(|a| a.eq_ignore_ascii_case(intent.symbol.as_str()))
    {
        return Decision::deny(
            Rail::SymbolAllowlist,
            format!("{} is not in risk.symbols; add it to trade it", intent.symbol.as_str()),
        );
    }

    if let Some(max) = limits.max_daily_loss
        && s.realized_today <= -max
        && !(exit && reduces)
    {
        return Decision::deny(
            Rail::DailyLoss,
            format!(
                "today's realized loss is {}, at or past risk.max_daily_loss = {max}: only orders that reduce a position pass until 00:00 UTC",
                -s.realized_today
            ),
        );
    }

    let mut bypassed = Vec::new();
    if let Some(hours) = &limits.trading_hours
        && let Err(now) = hours.check(s.now_ns)
    {
        if exit {
            bypassed.push(Rail::TradingHours);
        } else {
            return Decision::deny(
                Rail::TradingHours,
                format!("outside risk.trading_hours ({}); it is {now}", hours.describe()),
            );
        }
    }
    let mut gate = |rail: Rail, violated: Option<String>| -> Option<Decision> {
        let reason = violated?;
        if exit {
            bypassed.push(rail);
            None
        } else {
            Some(Decision::deny(rail, reason))
        }
    };

    if let Some(max) = limits.max_order_quantity
        && let Some(d) = gate(
            Rail::MaxOrderQuantity,
            (qty > max).then(|| format!("quantity {qty} is over risk.max_order_quantity = {max}")),
        )
    {
        return d;
    }
    if let Some(max) = limits.max_order_notional {
        let violated = match order_price(intent) {
            None => Some(
                "a market order without a reference price cannot be checked against risk.max_order_notional; send the price in the alert (or set the limit to 0 to disable it)".to_owned(),
            ),
            Some(p) => {
                let notional = qty.checked_mul(p);
                match notional {
                    Some(n) if n <= max => None,
                    Some(n) => Some(format!("notional {n} is over risk.max_order_notional = {max}")),
                    None => Some("the notional overflows".to_owned()),
                }
            }
        };
        if let Some(d) = gate(Rail::MaxOrderNotional, violated) {
            return d;
        }
    }
    if let (Some(band), Some(reference)) = (limits.price_band_pct, intent.reference_price.map(|p| p.get())) {
        let prices: Vec<Decimal> = match intent.order_type {
            // A trailing stop has no fixed price to band.
            OrderType::Market | OrderType::TrailingStop { .. } => Vec::new(),
            OrderType::Limit { limit } => vec![limit.get()],
            OrderType::Stop { stop } => vec![stop.get()],
            OrderType::StopLimit { stop, limit } => vec![stop.get(), limit.get()],
        };
        let hundred = Decimal::from(100);
        let violated = prices.into_iter().find_map(|p| {
            let off = ((p - reference).abs() * hundred).checked_div(reference)?;
            (off > band).then(|| {
                format!(
                    "price {p} is {}% from the reference price {reference}; risk.price_band_pct = {band}",
                    off.round_dp(2)
                )
            })
        });
        if let Some(d) = gate(Rail::PriceBand, violated) {
            return d;
        }
    }
    if let Some(max) = limits.max_orders_per_minute
        && let Some(d) = gate(
            Rail::OrdersPerMinute,
            (s.orders_last_minute >= max)
                .then(|| format!("{max} orders were sent in the last minute (risk.max_orders_per_minute)")),
        )
    {
        return d;
    }
    if let Some(max) = limits.max_orders_per_day
        && let Some(d) = gate(
            Rail::OrdersPerDay,
            (s.orders_today >= max).then(|| format!("{max} orders were sent today, UTC (risk.max_orders_per_day)")),
        )
    {
        return d;
    }
    if let Some(max) = limits.max_position {
        let violated = match s.position {
            None => Some(
                "the broker's position is unknown, so risk.max_position cannot be checked; the order is refused (fail closed)".to_owned(),
            ),
            Some(p) => {
                let projected = p + signed(intent);
                (projected.abs() > max && projected.abs() > p.abs()).then(|| {
                    format!(
                        "the position in {} would be {projected}, over risk.max_position = {max}",
                        intent.symbol.as_str()
                    )
                })
            }
        };
        // An exit never needs this rail: it reduces.
        if let Some(d) = gate(Rail::MaxPosition, violated) {
            return d;
        }
    }
    Decision {
        allowed: true,
        rail: None,
        reason: None,
        bypassed,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::money::{Price, Quantity};
    use crate::domain::order::{Symbol, TimeInForce};

    fn intent(side: Side, qty: Decimal, price: Option<Decimal>, reduce_only: bool) -> OrderIntent {
        OrderIntent {
            symbol: Symbol::new("AAPL").unwrap(),
            side,
            quantity: Quantity::new_checked(qty).unwrap(),
            order_type: OrderType::Market,
            time_in_force: TimeInForce::Day,
            requested_client_order_id: None,
            reduce_only,
            reference_price: price.map(|p| Price::new_checked(p).unwrap()),
            take_profit: None,
            stop_loss: None,
        }
    }

    fn limits() -> RiskLimits {
        RiskLimits {
            symbols: None,
            max_order_quantity: Some(Decimal::from(100)),
            max_order_notional: Some(Decimal::from(10_000)),
            max_position: Some(Decimal::from(250)),
            max_orders_per_minute: Some(20),
            max_orders_per_day: Some(50),
            price_band_pct: Some(Decimal::from(5)),
            max_daily_loss: None,
            trading_hours: None,
        }
    }

    fn snap(position: Decimal, minute: u32, day: u32) -> Snapshot {
        Snapshot {
            kill: KillSwitch::Off,
            position: Some(position),
            orders_last_minute: minute,
            orders_today: day,
            realized_today: Decimal::ZERO,
            now_ns: 0,
        }
    }

    #[test]
    fn trading_hours_follow_the_zone_and_exits_pass() {
        let hours = TradingHours {
            timezone: "America/New_York".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .iter()
                .map(|d| (*d).to_owned())
                .collect(),
            start_min: 9 * 60 + 30,
            end_min: 16 * 60,
        };
        let ns = |s: &str| i64::try_from(s.parse::<jiff::Timestamp>().unwrap().as_nanosecond()).unwrap();
        // 2026-12-04 is a Friday; New York is UTC−5 in December.
        assert!(hours.check(ns("2026-12-04T14:30:00Z")).is_ok(), "09:30 opens");
        assert!(hours.check(ns("2026-12-04T14:29:59Z")).is_err());
        assert!(hours.check(ns("2026-12-04T20:59:00Z")).is_ok());
        assert!(hours.check(ns("2026-12-04T21:00:00Z")).is_err(), "16:00 closes");
        assert_eq!(hours.check(ns("2026-12-05T15:00:00Z")).unwrap_err(), "Sat 10:00 EST");
        // Summer time: 13:30 UTC is 09:30 EDT.
        assert!(hours.check(ns("2026-07-06T13:30:00Z")).is_ok());
        let l = RiskLimits {
            trading_hours: Some(hours),
            ..limits()
        };
        let mut s = snap(Decimal::from(10), 0, 0);
        s.now_ns = ns("2026-12-05T15:00:00Z");
        let buy = intent(Side::Buy, Decimal::from(1), Some(Decimal::from(100)), false);
        let d = check(&l, &buy, &s);
        assert_eq!(d.rail, Some(Rail::TradingHours));
        assert!(d.reason.unwrap().contains("it is Sat 10:00 EST"));
        let exit = intent(Side::Sell, Decimal::from(10), Some(Decimal::from(100)), true);
        let d = check(&l, &exit, &s);
        assert!(d.allowed);
        assert_eq!(d.bypassed, [Rail::TradingHours]);
    }

    #[test]
    fn past_the_daily_loss_only_reducing_orders_pass() {
        let l = RiskLimits {
            max_daily_loss: Some(Decimal::from(500)),
            ..limits()
        };
        let mut s = snap(Decimal::from(10), 0, 0);
        s.realized_today = Decimal::from(-500);
        let buy = intent(Side::Buy, Decimal::from(1), Some(Decimal::from(100)), false);
        assert_eq!(check(&l, &buy, &s).rail, Some(Rail::DailyLoss));
        let exit = intent(Side::Sell, Decimal::from(10), Some(Decimal::from(100)), true);
        assert!(check(&l, &exit, &s).allowed);
        s.realized_today = Decimal::from(-499);
        assert!(check(&l, &buy, &s).allowed);
    }

    #[test]
    fn defaults_are_on() {
        let d = RiskLimits::default();
        assert!(d.max_order_quantity.is_some() && d.max_order_notional.is_some() && d.max_position.is_some());
        assert!(d.max_orders_per_minute.is_some() && d.max_orders_per_day.is_some() && d.price_band_pct.is_some());
    }

    #[test]
    fn the_kill_switch_stops_exits_and_reduce_only_mode_lets_only_them_through() {
        let l = limits();
        let exit = intent(Side::Sell, Decimal::from(10), Some(Decimal::from(100)), true);
        let buy = intent(Side::Buy, Decimal::from(10), Some(Decimal::from(100)), false);
        let mut s = snap(Decimal::from(10), 0, 0);
        s.kill = KillSwitch::On;
        assert_eq!(check(&l, &exit, &s).rail, Some(Rail::KillSwitch));
        s.kill = KillSwitch::ReduceOnly;
        assert!(check(&l, &exit, &s).allowed);
        assert_eq!(check(&l, &buy, &s).rail, Some(Rail::KillSwitch));
        // An "exit" that would flip the position is not an exit.
        let flip = intent(Side::Sell, Decimal::from(20), Some(Decimal::from(100)), true);
        assert_eq!(check(&l, &flip, &s).rail, Some(Rail::KillSwitch));
    }

    proptest! {
        /// Whatever the intent and the world, an allowed non-exit order
        /// respects every limit.
        #[test]
        fn an_allowed_order_respects_every_limit(
            buy in any::<bool>(),
            qty in 1u32..400,
            price in 1u32..500,
            position in -400i64..400,
            minute in 0u32..30,
            day in 0u32..60,
        ) {
            let l = limits();
            let side = if buy { Side::Buy } else { Side::Sell };
            let i = intent(side, Decimal::from(qty), Some(Decimal::from(price)), false);
            let s = snap(Decimal::from(position), minute, day);
            let d = check(&l, &i, &s);
            if d.allowed {
                let q = Decimal::from(qty);
                prop_assert!(q <= l.max_order_quantity.unwrap());
                prop_assert!(q * Decimal::from(price) <= l.max_order_notional.unwrap());
                prop_assert!(minute < 20 && day < 50);
                let projected = Decimal::from(position) + if buy { q } else { -q };
                prop_assert!(projected.abs() <= l.max_position.unwrap() || projected.abs() <= Decimal::from(position).abs());
            } else {
                prop_assert!(d.rail.is_some() && d.reason.is_some());
            }
        }

        /// No sequence of orders, applied one at a time as the host does
        /// (under its order lock, so concurrent alerts are a sequence too),
        /// takes the position past the limit or sends an entry past the
        /// daily cap.
        #[test]
        fn no_sequence_of_orders_breaks_a_limit(
            orders in proptest::collection::vec((any::<bool>(), 1u32..150, any::<bool>()), 1..120),
        ) {
            let l = limits();
            let (mut position, mut sent) = (Decimal::ZERO, 0u32);
            for (buy, qty, reduce_only) in orders {
                let side = if buy { Side::Buy } else { Side::Sell };
                let i = intent(side, Decimal::from(qty), Some(Decimal::from(50)), reduce_only);
                let s = snap(position, 0, sent);
                let d = check(&l, &i, &s);
                if d.allowed {
                    // Exits pass the count rails (and are counted); entries
                    // only while under the cap.
                    if !reduce_only {
                        prop_assert!(sent < l.max_orders_per_day.unwrap());
                    }
                    let before = position;
                    position += if buy { Decimal::from(qty) } else { -Decimal::from(qty) };
                    sent += 1;
                    prop_assert!(position.abs() <= l.max_position.unwrap() || position.abs() < before.abs());
                    if reduce_only {
                        prop_assert!(position.abs() < before.abs(), "an exit reduced the position");
                    }
                }
                prop_assert!(position.abs() <= l.max_position.unwrap());
            }
        }
    }
}
