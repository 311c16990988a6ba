//! Roles and the one table that decides what each may do. Every admin
//! endpoint names its [`Endpoint`]; [`allowed`] is the only place a
//! role-level decision is made, and a test walks every role × endpoint pair
//! against an independent golden table (`tests/it/rbac_matrix.txt`).
//! Object-level rules (a trader's own tokens, a trader's limit ceiling,
//! releasing the kill switch) are checked by the handler after this gate,
//! and audited the same way.

use serde::Serialize;

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Operate: routes, limits within the ceiling, the kill switch, own
    /// tokens; read everything but the audit export.
    Trader,
    /// Read-only; secrets by name only; not the audit log.
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

macro_rules! endpoints {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Every admin endpoint.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Endpoint {
            $($(#[$doc])* $name,)*
        }

        impl Endpoint {
            /// Every endpoint.
            pub const ALL: &'static [Endpoint] = &[$(Endpoint::$name,)*];
        }
    };
}

endpoints! {
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
    /// `GET /v1/alerts`.
    AlertsRead,
    /// `GET /v1/routes`.
    RoutesRead,
    /// Pause, resume, rotate a hook token.
    RoutesOperate,
    /// `GET /v1/plugins` (with grants).
    PluginsRead,
    /// Disable (revoke) or enable a plugin.
    PluginsManage,
    /// `GET /v1/limits`.
    LimitsRead,
    /// `PATCH /v1/limits`.
    LimitsWrite,
    /// `GET /v1/secrets` (names only).
    SecretsRead,
    /// `PUT`/`DELETE /v1/secrets/{name}`.
    SecretsWrite,
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
    /// `GET /v1/users`.
    UsersRead,
    /// `POST /v1/users`, `PATCH /v1/users/{name}`.
    UsersWrite,
}

/// The decision table.
pub fn allowed(role: Role, endpoint: Endpoint) -> bool {
    use Endpoint as E;
    match role {
        Role::Admin => true,
        Role::Trader => matches!(
            endpoint,
            E::Whoami
                | E::OpenApi
                | E::KillSwitchRead
                | E::KillSwitchSet
                | E::OrdersRead
                | E::AlertsRead
                | E::RoutesRead
                | E::RoutesOperate
                | E::PluginsRead
                | E::LimitsRead
                | E::LimitsWrite
                | E::SecretsRead
                | E::AuditSearch
                | E::TokensRead
                | E::TokensCreate
                | E::TokensRevoke
        ),
        Role::Viewer => matches!(
            endpoint,
            E::Whoami
                | E::OpenApi
                | E::KillSwitchRead
                | E::OrdersRead
                | E::AlertsRead
                | E::RoutesRead
                | E::PluginsRead
                | E::LimitsRead
                | E::SecretsRead
        ),
        Role::Auditor => matches!(
            endpoint,
            E::Whoami | E::OpenApi | E::AuditSearch | E::AuditExport | E::AuditVerify
        ),
    }
}
