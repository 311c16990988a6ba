//! Roles and the one table that decides what each may do. Every admin
//! endpoint names its [`Endpoint`]; [`allowed`] is the only place a decision
//! is made, and a test walks every role × endpoint pair against an
//! independent expectation table.

use serde::Serialize;

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Operate: the kill switch; read orders and the audit log.
    Trader,
    /// Read-only.
    Viewer,
    /// The audit log only: search, export, verify.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Trader, Role::Viewer, Role::Auditor];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Trader => "trader",
            Self::Viewer => "viewer",
            Self::Auditor => "auditor",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Self::Admin,
            "trader" => Self::Trader,
            "viewer" => Self::Viewer,
            "auditor" => Self::Auditor,
            _ => return None,
        })
    }
}

/// Every admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `GET /v1/whoami`.
    Whoami,
    /// `GET /v1/openapi.json`.
    OpenApi,
    /// `GET /v1/kill-switch`.
    KillSwitchRead,
    /// `PUT /v1/kill-switch`.
    KillSwitchSet,
    /// `GET /v1/orders`.
    OrdersRead,
    /// `GET /v1/audit/events`.
    AuditSearch,
    /// `GET /v1/audit/export`.
    AuditExport,
    /// `GET /v1/audit/verify`.
    AuditVerify,
    /// `GET /v1/tokens`.
    TokensRead,
    /// `POST /v1/tokens`.
    TokensCreate,
    /// `DELETE /v1/tokens/{id}`.
    TokensRevoke,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 11] = [
        Endpoint::Whoami,
        Endpoint::OpenApi,
        Endpoint::KillSwitchRead,
        Endpoint::KillSwitchSet,
        Endpoint::OrdersRead,
        Endpoint::AuditSearch,
        Endpoint::AuditExport,
        Endpoint::AuditVerify,
        Endpoint::TokensRead,
        Endpoint::TokensCreate,
        Endpoint::TokensRevoke,
    ];
}

/// The decision table.
pub fn allowed(role: Role, endpoint: Endpoint) -> bool {
    use Endpoint as E;
    match role {
        Role::Admin => true,
        Role::Trader => matches!(
            endpoint,
            E::Whoami | E::OpenApi | E::KillSwitchRead | E::KillSwitchSet | E::OrdersRead | E::AuditSearch
        ),
        Role::Viewer => matches!(
            endpoint,
            E::Whoami | E::OpenApi | E::KillSwitchRead | E::OrdersRead | E::AuditSearch
        ),
        Role::Auditor => matches!(
            endpoint,
            E::Whoami | E::OpenApi | E::AuditSearch | E::AuditExport | E::AuditVerify
        ),
    }
}
