//! Orders in `state.db`: one row per intent that passed the rule, with its
//! state, and one transition table that every state change goes through
//! ([`allowed`]). An intent is recorded (state `intent`, `sent = 1`) before
//! the broker is called, so after a crash the host knows which orders may
//! have reached the broker and asks it by client order id instead of
//! sending them again.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::store::{StateDb, StoreError};

/// The states of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Recorded; the broker call is about to happen (or happened and its
    /// answer was lost).
    Intent,
    /// The broker took it and has not said more.
    Submitted,
    /// Working at the broker.
    Accepted,
    /// Partly filled.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Canceled or expired.
    Canceled,
    /// Refused, by the host's rails or by the broker.
    Rejected,
    /// The broker call failed ambiguously and the broker could not say.
    Unknown,
}

impl OrderState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intent => "intent",
            Self::Submitted => "submitted",
            Self::Accepted => "accepted",
            Self::PartiallyFilled => "partially_filled",
            Self::Filled => "filled",
            Self::Canceled => "canceled",
            Self::Rejected => "rejected",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "intent" => Self::Intent,
            "submitted" => Self::Submitted,
            "accepted" => Self::Accepted,
            "partially_filled" => Self::PartiallyFilled,
            "filled" => Self::Filled,
            "canceled" => Self::Canceled,
            "rejected" => Self::Rejected,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// Returns true if and only if nothing more can happen to the order.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Filled | Self::Canceled | Self::Rejected)
    }
}

/// The one transition table.
pub fn allowed(from: OrderState, to: OrderState) -> bool {
    use OrderState::*;
    match from {
        Intent | Unknown => to != Intent,
        Submitted => !matches!(to, Intent | Submitted),
        Accepted => matches!(to, Accepted | PartiallyFilled | Filled | Canceled | Rejected | Unknown),
        PartiallyFilled => matches!(to, PartiallyFilled | Filled | Canceled | Unknown),
        Filled | Canceled | Rejected => false,
    }
}

/// One stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// Row id.
    pub id: i64,
    /// The client order id.
    pub client_order_id: String,
    /// The alert that produced it.
    pub alert_id: String,
    /// The route.
    pub route: String,
    /// The route's account (`main` for the route's own broker).
    pub account: String,
    /// The broker plugin.
    pub broker: String,
    /// The state.
    pub state: OrderState,
    /// Returns true if and only if the order was handed to the broker.
    pub sent: bool,
    /// The intent as JSON.
    pub intent: String,
    /// The broker's order id.
    pub broker_order_id: Option<String>,
    /// Why (rejections, unknown).
    pub reason: Option<String>,
    /// What the broker last said was filled (a decimal), if it said.
    pub filled_quantity: Option<String>,
    /// The average price of those fills (a decimal), if the broker said.
    pub average_fill_price: Option<String>,
    /// When the row was written (ns since the Unix epoch).
    pub created_at_ns: i64,
    /// When its state last changed (ns since the Unix epoch).
    pub updated_at_ns: i64,
}

impl OrderRow {
    /// The row as the admin API shows it: the intent as an object, times
    /// in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "client_order_id": self.client_order_id,
            "alert_id": self.alert_id,
            "route": self.route,
            "account": self.account,
            "broker": self.broker,
            "state": self.state,
            "sent": self.sent,
            "intent": serde_json::from_str::<serde_json::Value>(&self.intent)
                .unwrap_or_else(|_| serde_json::Value::String(self.intent.clone())),
            "broker_order_id": self.broker_order_id,
            "reason": self.reason,
            "filled_quantity": self.filled_quantity,
            "average_fill_price": self.average_fill_price,
            "created_at": crate::audit::format_ts(self.created_at_ns),
            "updated_at": crate::audit::format_ts(self.updated_at_ns),
        })
    }
}

/// Which orders [`Orders::list`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    /// Orders in this state.
    Is(OrderState),
    /// Orders handed to a broker that may still change (every state that
    /// is not final): what reconciliation refreshes.
    Working,
}

impl StateFilter {
    /// Parses `working` or a state's stored name.
    ///
    /// # Errors
    /// What was expected, for a message.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "working" {
            return Ok(Self::Working);
        }
        OrderState::parse(s).map(Self::Is).ok_or_else(|| {
            format!(
                "`{s}` is not an order state; expected working, intent, submitted, accepted, partially_filled, filled, canceled, rejected or unknown"
            )
        })
    }
}

/// A page of [`Orders::list`]: newest first, every field optional.
#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    /// Only orders in this state (or working).
    pub state: Option<StateFilter>,
    /// Only this route's orders.
    pub route: Option<String>,
    /// Only this account's orders (a route's account name).
    pub account: Option<String>,
    /// Only orders older than this row id (the `id` of the last row of the
    /// previous page).
    pub before_id: Option<i64>,
    /// At most this many rows (`None`: all that match).
    pub limit: Option<usize>,
}

/// A new order row.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    /// The client order id.
    pub client_order_id: &'a str,
    /// Same route, body and position in the rule's output.
    pub fingerprint: &'a str,
    /// The alert.
    pub alert_id: &'a str,
    /// The route.
    pub route: &'a str,
    /// The route's account.
    pub account: &'a str,
    /// The broker plugin.
    pub broker: &'a str,
    /// The intent as JSON.
    pub intent: &'a str,
}

/// Orders in `state.db`.
#[derive(Debug, Clone)]
pub struct Orders {
    db: StateDb,
    /// The settled prefix of the daily-loss replay (see [`Orders::realized_since`]).
    settled: std::sync::Arc<std::sync::Mutex<Settled>>,
    /// Orders whose alert is placing them now ([`Orders::placing`]).
    placing: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
}

/// Marks an order as being placed by its alert until dropped.
#[derive(Debug)]
pub struct Placing {
    set: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    id: i64,
}

impl Drop for Placing {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Average-cost positions per (`account/broker`, symbol): quantity (signed)
/// and average cost.
type Book = std::collections::HashMap<(String, String), (rust_decimal::Decimal, rust_decimal::Decimal)>;

/// The part of the realized-P&L replay that can no longer change: every
/// order with `id <= upto_id` is final (or was never sent), and final
/// orders' fills and times are fixed (the transition table has no way out
/// of a final state, and a transition to the same state changes nothing).
/// So the replay resumes here instead of from the first order ever placed.
#[derive(Debug, Default)]
struct Settled {
    /// The `since_ns` the realized sum counts from; another resets it.
    since_ns: i64,
    /// Orders up to this id are applied.
    upto_id: i64,
    /// The book after them.
    book: Book,
    /// Their realized P&L at or after `since_ns`.
    realized: rust_decimal::Decimal,
}

/// Applies one fill to `book`: realizes (fill − average cost) × the
/// quantity closed when the fill reduces a position (average-cost method),
/// adding it to `realized` when the fill is at or after `since_ns`.
fn apply_fill(
    book: &mut Book,
    realized: &mut rust_decimal::Decimal,
    since_ns: i64,
    (account, intent, at, qty, price): (String, String, i64, String, String),
) {
    use rust_decimal::Decimal;
    let intent: serde_json::Value = serde_json::from_str(&intent).unwrap_or_default();
    let (Ok(qty), Ok(price)) = (qty.parse::<Decimal>(), price.parse::<Decimal>()) else {
        return;
    };
    let symbol = intent["symbol"].as_str().unwrap_or_default().to_owned();
    let signed = if intent["side"] == "sell" { -qty } else { qty };
    let (pos, avg) = book.entry((account, symbol)).or_insert((Decimal::ZERO, Decimal::ZERO));
    if !pos.is_zero() && pos.is_sign_positive() != signed.is_sign_positive() {
        let closed = signed.abs().min(pos.abs());
        let pnl = if pos.is_sign_positive() {
            (price - *avg) * closed
        } else {
            (*avg - price) * closed
        };
        if at >= since_ns {
            *realized += pnl;
        }
        let rest = signed.abs() - closed;
        *pos += if signed.is_sign_positive() { closed } else { -closed };
        if !rest.is_zero() {
            // Flipped through zero: the rest opens at this price.
            *pos = if signed.is_sign_positive() { rest } else { -rest };
            *avg = price;
        }
    } else {
        let total = pos.abs() + qty;
        *avg = if total.is_zero() {
            price
        } else {
            (*avg * pos.abs() + price * qty) / total
        };
        *pos += signed;
    }
}

/// The first sent order with client order id ?1, or with fingerprint ?2
/// since ?3. Two index lookups, not one `OR`: with `ORDER BY id` SQLite
/// answered the `OR` by scanning the whole table (1.4 ms per order at
/// 20,000 orders, measured). `hot_queries_use_indexes` checks the plan.
/// Every order after the settled prefix of the realized-P&L replay, in id
/// order (a range of the primary key).
const REALIZED_TAIL: &str =
    "SELECT id, state, sent, account || '/' || broker, intent, updated_at_ns, filled_quantity, average_fill_price
     FROM orders WHERE id > ?1 ORDER BY id";

const DUPLICATE_ID: &str = "SELECT min(id) FROM (
    SELECT id FROM orders WHERE client_order_id = ?1 AND sent = 1
    UNION ALL
    SELECT id FROM orders WHERE fingerprint = ?2 AND created_at_ns >= ?3 AND sent = 1)";

/// Sent orders since ?1, counted up to ?2.
const SENT_SINCE: &str = "SELECT count(*) FROM (SELECT 1 FROM orders WHERE sent = 1 AND created_at_ns >= ?1 LIMIT ?2)";

/// Intents of orders on broker ?1, account ?2 still in flight.
const IN_FLIGHT: &str = "SELECT intent FROM orders WHERE broker = ?1 AND account = ?2 AND sent = 1 AND state IN ('intent', 'submitted', 'unknown')";

const COLUMNS: &str =
    "id, client_order_id, alert_id, route, broker, state, sent, intent, broker_order_id, reason, account,
     filled_quantity, average_fill_price, created_at_ns, updated_at_ns";

/// The states of a working order (not final, handed to a broker). No index
/// serves it: one was measured to cost the alert path's p99 (4.8–5.3 ms
/// without it, 5.7–6.2 with it, at 1,100 alerts/s, session 18), for a
/// query that runs every five minutes; it is a scan instead, on the
/// read-only side connection, about 50 ms at 200,000 orders, while alerts
/// go on.
const WORKING: &str = "sent = 1 AND state IN ('intent', 'submitted', 'accepted', 'partially_filled', 'unknown')";

/// Whether an order with client order id ?1 was handed to a broker.
const SENT_COID: &str = "SELECT EXISTS (SELECT 1 FROM orders WHERE client_order_id = ?1 AND sent = 1)";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        id: r.get(0)?,
        client_order_id: r.get(1)?,
        alert_id: r.get(2)?,
        route: r.get(3)?,
        broker: r.get(4)?,
        state: OrderState::parse(&r.get::<_, String>(5)?).unwrap_or(OrderState::Unknown),
        sent: r.get(6)?,
        intent: r.get(7)?,
        broker_order_id: r.get(8)?,
        reason: r.get(9)?,
        account: r.get(10)?,
        filled_quantity: r.get(11)?,
        average_fill_price: r.get(12)?,
        created_at_ns: r.get(13)?,
        updated_at_ns: r.get(14)?,
    })
}

/// Moves order `id` to `to` through the transition table, inside the
/// caller's transaction. Returns the state it moved from.
fn move_state(
    tx: &rusqlite::Connection,
    id: i64,
    to: OrderState,
    broker_order_id: Option<&str>,
    reason: Option<&str>,
) -> rusqlite::Result<OrderState> {
    let from: String = tx
        .prepare_cached("SELECT state FROM orders WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    let from = OrderState::parse(&from).unwrap_or(OrderState::Unknown);
    if from == to && !matches!(to, OrderState::PartiallyFilled) {
        return Ok(from);
    }
    if !allowed(from, to) {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "order {id}: {} → {} is not an allowed transition",
            from.as_str(),
            to.as_str()
        )));
    }
    let now = crate::audit::now_ns();
    tx.prepare_cached(
        "UPDATE orders SET state = ?1, broker_order_id = coalesce(?2, broker_order_id), reason = coalesce(?3, reason), updated_at_ns = ?4 WHERE id = ?5",
    )?
    .execute(params![to.as_str(), broker_order_id, reason, now, id])?;
    tx.prepare_cached(
        "INSERT INTO order_transition(order_id, from_state, to_state, at_ns, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, from.as_str(), to.as_str(), now, reason])?;
    Ok(from)
}

/// Records what the broker says was filled of order `id`.
fn set_fill(
    c: &rusqlite::Connection,
    id: i64,
    filled: rust_decimal::Decimal,
    average: Option<rust_decimal::Decimal>,
) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE orders SET filled_quantity = ?1, average_fill_price = ?2 WHERE id = ?3")?
        .execute(params![filled.to_string(), average.map(|a| a.to_string()), id])
        .map(drop)
}

impl Orders {
    /// Orders stored in `db`.
    pub fn new(db: StateDb) -> Self {
        Self {
            db,
            settled: std::sync::Arc::default(),
            placing: std::sync::Arc::default(),
        }
    }

    /// Marks order `id` as being placed by its alert (from its row to the
    /// broker's answer, and the lookup after an unclear one) until the
    /// guard drops. A reconciliation sweep leaves such an order alone: it
    /// is working by its state but not yet at the broker, so asking the
    /// broker would find nothing and reject an order about to be placed
    /// (seen: the start's sweep beside the first alert rejected its order,
    /// and the broker's fill then could not be recorded).
    pub fn placing(&self, id: i64) -> Placing {
        self.placing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        Placing {
            set: self.placing.clone(),
            id,
        }
    }

    /// Claims order `id` for one lookup at its broker (a sweep, the
    /// resolver of unknown orders): `None` when its alert is placing it or
    /// another lookup has it, so two never settle and notify the same
    /// answer twice.
    pub fn claim(&self, id: i64) -> Option<Placing> {
        self.placing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id)
            .then(|| Placing {
                set: self.placing.clone(),
                id,
            })
    }

    /// An order already sent with this client order id, or with the same
    /// fingerprint since `since_ns` (the dedupe window).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn duplicate_of(&self, coid: &str, fingerprint: &str, since_ns: i64) -> Result<Option<OrderRow>, StoreError> {
        self.db.with(|c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM orders WHERE id = ({DUPLICATE_ID})"))?
                .query_row(params![coid, fingerprint, since_ns], row)
                .optional()
        })
    }

    /// Records an intent about to be sent (`sent = 1`, state `intent`), or
    /// one the rails refused (`sent = 0`, state `rejected`). Returns the id.
    ///
    /// # Errors
    /// [`StoreError`] (a second sent order with the same client order id is
    /// refused by a unique index).
    pub fn insert(&self, o: &NewOrder<'_>, refused: Option<&str>) -> Result<i64, StoreError> {
        let now = crate::audit::now_ns();
        let (state, sent) = match refused {
            None => (OrderState::Intent, true),
            Some(_) => (OrderState::Rejected, false),
        };
        self.db.with_tx(|c| {
            c.prepare_cached(
                "INSERT INTO orders(client_order_id, fingerprint, alert_id, route, broker, intent, state, sent, reason, created_at_ns, updated_at_ns, account)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
            )?
            .execute(params![o.client_order_id, o.fingerprint, o.alert_id, o.route, o.broker, o.intent, state.as_str(), sent, refused, now, o.account])?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Moves order `id` to `to` through the transition table.
    ///
    /// # Errors
    /// [`StoreError`], including a transition the table does not allow.
    pub fn transition(
        &self,
        id: i64,
        to: OrderState,
        broker_order_id: Option<&str>,
        reason: Option<&str>,
    ) -> Result<OrderState, StoreError> {
        self.db.with_tx(|tx| move_state(tx, id, to, broker_order_id, reason))
    }

    /// The broker's answer about order `id`: the move to `to` (as
    /// [`Orders::transition`]) and what it says was filled, in one
    /// transaction (one commit per answer instead of two; a refused move
    /// records no fill). Returns the state it moved from.
    ///
    /// # Errors
    /// [`StoreError`], including a transition the table does not allow.
    pub fn settle(
        &self,
        id: i64,
        to: OrderState,
        broker_order_id: Option<&str>,
        reason: Option<&str>,
        filled: rust_decimal::Decimal,
        average: Option<rust_decimal::Decimal>,
    ) -> Result<OrderState, StoreError> {
        self.settle_seen(id, to, broker_order_id, reason, filled, average)
            .map(|(from, _)| from)
    }

    /// [`Orders::settle`], returning also what was filled before it (read
    /// in the same transaction): what a lookup changed, for its
    /// notification.
    ///
    /// # Errors
    /// [`StoreError`], including a transition the table does not allow.
    pub fn settle_seen(
        &self,
        id: i64,
        to: OrderState,
        broker_order_id: Option<&str>,
        reason: Option<&str>,
        filled: rust_decimal::Decimal,
        average: Option<rust_decimal::Decimal>,
    ) -> Result<(OrderState, Option<rust_decimal::Decimal>), StoreError> {
        self.db.with_tx(|tx| {
            let before: Option<String> = tx
                .prepare_cached("SELECT filled_quantity FROM orders WHERE id = ?1")?
                .query_row([id], |r| r.get(0))?;
            let from = move_state(tx, id, to, broker_order_id, reason)?;
            set_fill(tx, id, filled, average)?;
            Ok((from, before.and_then(|b| b.parse().ok())))
        })
    }

    /// Records what the broker says was filled.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn record_fill(
        &self,
        id: i64,
        filled: rust_decimal::Decimal,
        average: Option<rust_decimal::Decimal>,
    ) -> Result<(), StoreError> {
        self.db.with_tx(|c| set_fill(c, id, filled, average))
    }

    /// Realized profit (negative: loss) of fills since `since_ns`, per the
    /// average-cost method over every fill of the account and symbol: a
    /// fill that reduces a position realizes (fill − average cost) × the
    /// quantity closed.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn realized_since(&self, since_ns: i64) -> Result<rust_decimal::Decimal, StoreError> {
        // Only the orders after the settled prefix are read: one day's
        // orders back to the oldest one still open, not every order ever
        // placed (the replay from the first order made the daily-loss rail
        // cost grow with the account's whole history, under the order lock).
        let mut settled = self.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if settled.since_ns != since_ns {
            *settled = Settled {
                since_ns,
                ..Settled::default()
            };
        }
        type Tail = (i64, String, bool, bool, (String, String, i64, String, String));
        let tail: Vec<Tail> = self.db.with(|c| {
            c.prepare_cached(REALIZED_TAIL)?
                .query_map([settled.upto_id], |r| {
                    let filled: Option<String> = r.get(6)?;
                    let average: Option<String> = r.get(7)?;
                    let has_fill = filled.is_some() && average.is_some();
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, bool>(2)? && has_fill,
                        r.get(2)?,
                        (
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            filled.unwrap_or_default(),
                            average.unwrap_or_default(),
                        ),
                    ))
                })?
                .collect()
        })?;
        let mut book = None::<Book>;
        let mut realized = settled.realized;
        for (id, state, fill, sent, f) in tail {
            let settles = book.is_none() && (!sent || OrderState::parse(&state).is_some_and(OrderState::is_final));
            if settles {
                if fill {
                    let s = &mut *settled;
                    apply_fill(&mut s.book, &mut s.realized, since_ns, f);
                    realized = s.realized;
                }
                settled.upto_id = id;
            } else {
                // From the first order that may still change, the replay
                // goes on in a copy and is read again next time.
                let b = book.get_or_insert_with(|| settled.book.clone());
                if fill {
                    apply_fill(b, &mut realized, since_ns, f);
                }
            }
        }
        Ok(realized)
    }

    /// Orders sent since `since_ns`, counted up to `cap` (a rail needs to
    /// know only whether its limit is reached, so the count stops there and
    /// its cost does not grow with the day's volume).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn sent_since(&self, since_ns: i64, cap: u32) -> Result<u32, StoreError> {
        self.db.with(|c| {
            c.prepare_cached(SENT_SINCE)?
                .query_row(params![since_ns, cap], |r| r.get(0))
        })
    }

    /// The signed quantity in `symbol` of the orders on `account` at
    /// `broker` whose fate the broker has not told yet (`intent`,
    /// `submitted`, `unknown`): sent or about to be, so not in the broker's
    /// positions yet, or perhaps already in them. The position rail adds
    /// this to the broker's position, which can only over-count (fail
    /// safe). `None` when a recorded intent cannot be read.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn in_flight(
        &self,
        broker: &str,
        account: &str,
        symbol: &str,
    ) -> Result<Option<rust_decimal::Decimal>, StoreError> {
        let intents: Vec<String> = self.db.with(|c| {
            let mut s = c.prepare_cached(IN_FLIGHT)?;
            s.query_map(params![broker, account], |r| r.get(0))?.collect()
        })?;
        let mut total = rust_decimal::Decimal::ZERO;
        for intent in intents {
            let v: serde_json::Value = serde_json::from_str(&intent).unwrap_or_default();
            if !v["symbol"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(symbol)) {
                continue;
            }
            let Some(qty) = v["quantity"]
                .as_str()
                .and_then(|q| q.parse::<rust_decimal::Decimal>().ok())
            else {
                return Ok(None);
            };
            let signed = match v["side"].as_str() {
                Some("buy") => qty,
                Some("sell") => -qty,
                _ => return Ok(None),
            };
            let Some(t) = total.checked_add(signed) else {
                return Ok(None);
            };
            total = t;
        }
        Ok(Some(total))
    }

    /// Orders that may have reached a broker without a known outcome
    /// (`intent` or `unknown`): what reconciliation asks about.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn unresolved(&self) -> Result<Vec<OrderRow>, StoreError> {
        self.db.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {COLUMNS} FROM orders WHERE sent = 1 AND state IN ('intent', 'unknown') ORDER BY id"
            ))?;
            s.query_map([], row)?.collect()
        })
    }

    /// Every order of `alert_id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn of_alert(&self, alert_id: &str) -> Result<Vec<OrderRow>, StoreError> {
        self.db.with(|c| {
            let mut s = c.prepare(&format!("SELECT {COLUMNS} FROM orders WHERE alert_id = ?1 ORDER BY id"))?;
            s.query_map([alert_id], row)?.collect()
        })
    }

    /// Orders matching `q`, newest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn list(&self, q: &OrderQuery) -> Result<Vec<OrderRow>, StoreError> {
        let (sql, args) = list_sql(q);
        self.db.with(|c| {
            let mut s = c.prepare_cached(&sql)?;
            s.query_map(rusqlite::params_from_iter(args), row)?.collect()
        })
    }

    /// [`Orders::list`] on the state database's read-only connection
    /// ([`StateDb::read_aside`]): for the admin API, whose filters may
    /// scan a long history; alerts do not wait for it. Committed orders
    /// only (at most one 5 ms batch behind).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn list_aside(&self, q: &OrderQuery) -> Result<Vec<OrderRow>, StoreError> {
        let (sql, args) = list_sql(q);
        self.db.read_aside(|c| {
            let mut s = c.prepare_cached(&sql)?;
            s.query_map(rusqlite::params_from_iter(args), row)?.collect()
        })
    }

    /// Orders in state `unknown`, oldest first, on the read-only side
    /// connection: a lookup of the `orders_in_flight` partial index (few
    /// rows), not a scan of the history, so it can run every few seconds.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn unknown_aside(&self) -> Result<Vec<OrderRow>, StoreError> {
        self.db.read_aside(|c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM orders INDEXED BY orders_in_flight
                 WHERE sent = 1 AND state IN ('intent', 'submitted', 'unknown') AND state = 'unknown' ORDER BY id"
            ))?;
            s.query_map([], row)?.collect()
        })
    }

    /// Every working order (handed to a broker and not final), oldest
    /// first: what reconciliation refreshes. Read on the read-only side
    /// connection ([`Orders::list_aside`]; a scan of the table, see
    /// `WORKING`), so the alerts' connection is not held meanwhile; call
    /// it off the async workers.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn working(&self) -> Result<Vec<OrderRow>, StoreError> {
        let mut rows = self.list_aside(&OrderQuery {
            state: Some(StateFilter::Working),
            ..OrderQuery::default()
        })?;
        rows.reverse();
        Ok(rows)
    }

    /// Returns true if and only if an order with this client order id was
    /// handed to a broker.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn was_sent(&self, client_order_id: &str) -> Result<bool, StoreError> {
        self.db
            .with(|c| c.prepare_cached(SENT_COID)?.query_row([client_order_id], |r| r.get(0)))
    }
}

/// The statement and arguments of [`Orders::list`]: only the conditions
/// asked for, so each one can use its index (an `?n IS NULL OR …` form
/// would make SQLite scan).
fn list_sql(q: &OrderQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conds = Vec::new();
    let mut args = Vec::new();
    if q.state == Some(StateFilter::Working) {
        conds.push(WORKING.to_owned());
    }
    let mut arg = |cond: &str, v: Value| {
        args.push(v);
        conds.push(cond.replace('?', &format!("?{}", args.len())));
    };
    if let Some(StateFilter::Is(st)) = q.state {
        arg("state = ?", Value::Text(st.as_str().to_owned()));
    }
    if let Some(r) = &q.route {
        arg("route = ?", Value::Text(r.clone()));
    }
    if let Some(a) = &q.account {
        arg("account = ?", Value::Text(a.clone()));
    }
    if let Some(b) = q.before_id {
        arg("id < ?", Value::Integer(b));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM orders");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY id DESC");
    if let Some(n) = q.limit {
        args.push(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" LIMIT ?{}", args.len()));
    }
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderState::*;

    const ALL: [OrderState; 8] = [
        Intent,
        Submitted,
        Accepted,
        PartiallyFilled,
        Filled,
        Canceled,
        Rejected,
        Unknown,
    ];

    #[test]
    fn final_states_have_no_way_out_and_nothing_returns_to_intent() {
        for from in ALL {
            for to in ALL {
                if from.is_final() {
                    assert!(!allowed(from, to), "{from:?} → {to:?}");
                }
                if to == Intent {
                    assert!(!allowed(from, to), "{from:?} → {to:?}");
                }
            }
        }
        assert!(allowed(Intent, Filled));
        assert!(allowed(Unknown, Filled));
        assert!(allowed(PartiallyFilled, PartiallyFilled));
        assert!(!allowed(Accepted, Submitted));
    }

    /// The order path's queries are index lookups whatever the table holds
    /// (a scan grows with every order ever placed).
    #[test]
    fn hot_queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        for sql in [DUPLICATE_ID, SENT_SINCE, IN_FLIGHT] {
            let plan: Vec<String> = db
                .with(|c| {
                    let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let nulls = vec![rusqlite::types::Value::Null; s.parameter_count()];
                    s.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
                        .collect()
                })
                .unwrap();
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN orders")),
                "{sql}\n{plan:#?}"
            );
        }
    }

    /// Inserts an order of `qty` `symbol` on the paper broker; its client
    /// order id is also its fingerprint.
    fn add_order(
        orders: &Orders,
        coid: &str,
        account: &str,
        symbol: &str,
        side: &str,
        qty: &str,
        refused: Option<&str>,
    ) -> i64 {
        let intent = format!(r#"{{"symbol":"{symbol}","side":"{side}","quantity":"{qty}"}}"#);
        let order = NewOrder {
            client_order_id: coid,
            fingerprint: coid,
            alert_id: "a",
            route: "r",
            account,
            broker: "paper",
            intent: &intent,
        };
        orders.insert(&order, refused).unwrap()
    }

    /// Listing is newest first and pages back with `before`; the working
    /// orders (what reconciliation refreshes) are found whatever the
    /// history holds: the sweep used to read the 100,000 oldest orders, so
    /// past that many it refreshed none of the new ones and called their
    /// open orders at the broker drift.
    #[test]
    fn lists_newest_first_and_finds_working_orders_past_any_history() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        let orders = Orders::new(db.clone());
        let mut ids = Vec::new();
        for n in 0..250 {
            let account = if n % 2 == 0 { "main" } else { "hedge" };
            let id = add_order(&orders, &format!("c-{n}"), account, "AAPL", "buy", "1", None);
            orders.transition(id, Filled, Some("b"), None).unwrap();
            ids.push(id);
        }
        let accepted = add_order(&orders, "c-accepted", "main", "AAPL", "buy", "1", None);
        orders.transition(accepted, Accepted, Some("b-a"), None).unwrap();
        let partial = add_order(&orders, "c-partial", "hedge", "AAPL", "buy", "2", None);
        orders.transition(partial, PartiallyFilled, Some("b-p"), None).unwrap();
        let refused = add_order(&orders, "c-refused", "main", "AAPL", "buy", "1", Some("a rail"));
        let intent = add_order(&orders, "c-intent", "main", "MSFT", "sell", "3", None);
        let unknown = add_order(&orders, "c-unknown", "main", "MSFT", "sell", "3", None);
        orders.transition(unknown, Unknown, None, Some("timeout")).unwrap();
        db.commit().unwrap();

        let working: Vec<i64> = orders.working().unwrap().iter().map(|o| o.id).collect();
        assert_eq!(working, [accepted, partial, intent, unknown]);
        let unknown_only: Vec<i64> = orders.unknown_aside().unwrap().iter().map(|o| o.id).collect();
        assert_eq!(unknown_only, [unknown], "through the in-flight index");
        assert!(orders.was_sent("c-accepted").unwrap());
        assert!(orders.was_sent("c-7").unwrap());
        assert!(!orders.was_sent("c-refused").unwrap(), "refused by a rail: never sent");
        assert!(!orders.was_sent("stray-1").unwrap());

        let page = |q: OrderQuery| -> Vec<i64> { orders.list_aside(&q).unwrap().iter().map(|o| o.id).collect() };
        let first = page(OrderQuery {
            limit: Some(3),
            ..OrderQuery::default()
        });
        assert_eq!(first, [unknown, intent, refused], "newest first");
        let next = page(OrderQuery {
            limit: Some(2),
            before_id: Some(refused),
            ..OrderQuery::default()
        });
        assert_eq!(next, [partial, accepted]);
        let every = page(OrderQuery::default());
        assert_eq!(every.len(), 255);
        assert!(every.windows(2).all(|w| w[0] > w[1]));
        let filled_hedge = page(OrderQuery {
            state: Some(StateFilter::Is(Filled)),
            account: Some("hedge".into()),
            limit: Some(2),
            ..OrderQuery::default()
        });
        assert_eq!(filled_hedge, [ids[249], ids[247]]);
        let working_main = page(OrderQuery {
            state: Some(StateFilter::Working),
            account: Some("main".into()),
            route: Some("r".into()),
            ..OrderQuery::default()
        });
        assert_eq!(working_main, [unknown, intent, accepted]);
        assert!(
            page(OrderQuery {
                route: Some("other".into()),
                ..OrderQuery::default()
            })
            .is_empty()
        );
        // The row as the API shows it: the intent as an object, times, fills.
        orders
            .settle(
                partial,
                PartiallyFilled,
                None,
                None,
                "1.5".parse().unwrap(),
                Some("190.25".parse().unwrap()),
            )
            .unwrap();
        let shown = orders.list(&OrderQuery {
            state: Some(StateFilter::Is(PartiallyFilled)),
            ..OrderQuery::default()
        });
        let shown = shown.unwrap()[0].to_json();
        assert_eq!(shown["intent"]["quantity"], "2");
        assert_eq!(shown["filled_quantity"], "1.5");
        assert_eq!(shown["average_fill_price"], "190.25");
        assert!(shown["created_at"].as_str().unwrap().ends_with('Z'), "{shown}");

        // The drift check, once per open order at the broker, is an index
        // lookup.
        let plan: Vec<String> = db
            .with(|c| {
                let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {SENT_COID}"))?;
                s.query_map([rusqlite::types::Value::Null], |r| r.get::<_, String>(3))?
                    .collect()
            })
            .unwrap();
        assert!(plan.iter().any(|step| step.contains("orders_sent_coid")), "{plan:#?}");
    }

    #[test]
    fn in_flight_sums_unanswered_orders_of_one_account_and_symbol() {
        let dir = tempfile::tempdir().unwrap();
        let orders = Orders::new(StateDb::open(&dir.path().join("state.db")).unwrap());
        let mut n = 0;
        let mut add = |account: &str, symbol: &str, side: &str, qty: &str, refused: Option<&str>| {
            n += 1;
            add_order(&orders, &format!("c-{n}"), account, symbol, side, qty, refused)
        };
        let buy = add("main", "AAPL", "buy", "10", None);
        add("main", "AAPL", "sell", "2.5", None);
        add("main", "MSFT", "buy", "7", None);
        add("hedge", "AAPL", "buy", "100", None);
        add("main", "AAPL", "buy", "1000", Some("refused by a rail"));
        let unknown = add("main", "AAPL", "buy", "1", None);
        let filled = add("main", "AAPL", "buy", "50", None);
        orders.transition(unknown, Unknown, None, Some("timeout")).unwrap();
        orders.transition(filled, Filled, Some("b-9"), None).unwrap();
        let f = |a: &str, s: &str| orders.in_flight("paper", a, s).unwrap();
        // 10 − 2.5 + 1 (unknown counts); filled, refused and other accounts do not.
        assert_eq!(f("main", "aapl"), Some("8.5".parse().unwrap()));
        assert_eq!(f("hedge", "AAPL"), Some("100".parse().unwrap()));
        assert_eq!(f("main", "TSLA"), Some(rust_decimal::Decimal::ZERO));
        assert_eq!(
            orders.in_flight("alpaca", "main", "AAPL").unwrap(),
            Some(rust_decimal::Decimal::ZERO)
        );
        orders.transition(buy, Accepted, Some("b-1"), None).unwrap();
        assert_eq!(f("main", "AAPL"), Some("-1.5".parse().unwrap()));
        // Counts stop at the cap.
        assert_eq!(orders.sent_since(0, 100).unwrap(), 6);
        assert_eq!(orders.sent_since(0, 3).unwrap(), 3);
        assert_eq!(orders.sent_since(i64::MAX, 100).unwrap(), 0);
    }

    #[test]
    fn realized_replay_resumes_from_its_settled_prefix_and_matches_a_full_replay() {
        use rust_decimal::Decimal;
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        // Long-lived: keeps its settled prefix between calls.
        let orders = Orders::new(db.clone());
        // A small deterministic generator, so a failure replays exactly.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut open: Vec<(i64, Decimal)> = Vec::new();
        let mut since = 0;
        for step in 0..400 {
            if step == 200 {
                // A new day: the realized sum counts from here.
                since = crate::audit::now_ns();
            }
            match next(4) {
                0 | 1 => {
                    let coid = format!("c-{step}");
                    let side = if next(2) == 0 { "buy" } else { "sell" };
                    let symbol = ["AAPL", "MSFT"][usize::try_from(next(2)).unwrap()];
                    let account = ["main", "hedge"][usize::try_from(next(2)).unwrap()];
                    let qty = Decimal::from(1 + next(20));
                    let refused = (next(10) == 0).then_some("refused by a rail");
                    let id = add_order(&orders, &coid, account, symbol, side, &qty.to_string(), refused);
                    if refused.is_none() {
                        open.push((id, qty));
                    }
                }
                2 if !open.is_empty() => {
                    // Some order, not necessarily the oldest, fills in part
                    // or in full; an old open order filling late is the
                    // case the settled prefix must not skip.
                    let at = usize::try_from(next(open.len() as u64)).unwrap();
                    let (id, qty) = open[at];
                    let price = Decimal::new(i64::try_from(10_000 + next(2_000)).unwrap(), 2);
                    if next(3) == 0 {
                        orders.transition(id, PartiallyFilled, Some("b"), None).unwrap();
                        orders.record_fill(id, qty / Decimal::TWO, Some(price)).unwrap();
                    } else {
                        orders.transition(id, Filled, Some("b"), None).unwrap();
                        orders.record_fill(id, qty, Some(price)).unwrap();
                        open.remove(at);
                    }
                }
                _ if !open.is_empty() && next(4) == 0 => {
                    let (id, _) = open.remove(usize::try_from(next(open.len() as u64)).unwrap());
                    orders.transition(id, Canceled, None, Some("canceled")).unwrap();
                }
                _ => {}
            }
            let fresh = Orders::new(db.clone()).realized_since(since).unwrap();
            assert_eq!(orders.realized_since(since).unwrap(), fresh, "step {step}");
        }
        // Once everything is final, the whole history is settled and the
        // next call reads nothing before it.
        for (id, _) in std::mem::take(&mut open) {
            orders.transition(id, Canceled, None, None).unwrap();
        }
        let all = orders.realized_since(since).unwrap();
        let last: i64 = db
            .with(|c| c.query_row("SELECT max(id) FROM orders", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(orders.settled.lock().unwrap().upto_id, last);
        assert_eq!(all, Orders::new(db.clone()).realized_since(since).unwrap());
        assert_ne!(all, Decimal::ZERO, "the sequence realized something");
    }

    #[test]
    fn settle_moves_and_records_the_fill_together_or_not_at_all() {
        use rust_decimal::Decimal;
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        let orders = Orders::new(db.clone());
        let o = NewOrder {
            client_order_id: "sig-1",
            fingerprint: "f",
            alert_id: "a",
            route: "r",
            account: "main",
            broker: "paper",
            intent: r#"{"symbol":"AAPL","side":"buy","quantity":"10"}"#,
        };
        let id = orders.insert(&o, None).unwrap();
        let fill = |id: i64| -> (String, Option<String>, Option<String>, i64) {
            db.with(|c| {
                c.query_row(
                    "SELECT state, filled_quantity, average_fill_price, (SELECT count(*) FROM order_transition WHERE order_id = ?1) FROM orders WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
            })
            .unwrap()
        };
        let from = orders
            .settle(
                id,
                Filled,
                Some("b-1"),
                None,
                Decimal::TEN,
                Some("190.35".parse().unwrap()),
            )
            .unwrap();
        assert_eq!(from, Intent);
        assert_eq!(fill(id), ("filled".into(), Some("10".into()), Some("190.35".into()), 1));
        // A final order cannot move; the fill of the refused answer is not kept.
        assert!(orders.settle(id, Accepted, None, None, Decimal::ONE, None).is_err());
        assert_eq!(fill(id), ("filled".into(), Some("10".into()), Some("190.35".into()), 1));
    }

    #[test]
    fn one_sent_order_per_client_order_id() {
        let dir = tempfile::tempdir().unwrap();
        let orders = Orders::new(StateDb::open(&dir.path().join("state.db")).unwrap());
        let o = NewOrder {
            client_order_id: "sig-1",
            fingerprint: "f",
            alert_id: "a",
            route: "r",
            account: "main",
            broker: "b",
            intent: "{}",
        };
        let id = orders.insert(&o, None).unwrap();
        assert!(orders.insert(&o, None).is_err(), "the unique index refuses a second");
        orders.insert(&o, Some("risk")).unwrap();
        assert_eq!(orders.duplicate_of("sig-1", "x", 0).unwrap().unwrap().id, id);
        assert_eq!(orders.transition(id, Filled, Some("b-1"), None).unwrap(), Intent);
        let err = orders.transition(id, Canceled, None, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("filled → canceled is not an allowed transition"),
            "{err}"
        );
        assert_eq!(orders.sent_since(0, 10).unwrap(), 1);
    }
}
