//! Requests and answers of the decision engine. Requests borrow their strings
//! from the caller so a check allocates nothing; answers are `Copy` unless the
//! caller asks for evidence.

use crate::model::{Perm, Revision};

/// Why a decision came out as it did. The first failing part of SPEC §4 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Every part holds.
    Allowed,
    /// Every part holds, and a privilege came from the application's
    /// `open_when_unconfigured` rule (the person has no configuration for it).
    OpenWhenUnconfigured,
    /// The tenant is not known to this replica.
    UnknownTenant,
    /// The tenant's snapshot is not loaded yet.
    NotLoaded,
    /// No such person in the tenant.
    UnknownSubject,
    /// The person is disabled.
    DisabledSubject,
    /// No such object (of that type) in the tenant.
    UnknownObject,
    /// The object named another tenant than the request's.
    CrossTenant,
    /// The application named in the request has no catalog in the tenant.
    UnknownApplication,
    /// The privilege named in the request is not in the application's catalog.
    UnknownPrivilege,
    /// The object is partitioned and the person is in none of its partitions.
    Partition,
    /// An entry of one of the person's principals denies the permission.
    ExplicitDeny,
    /// No entry of the person's principals allows the permission.
    NoGrant,
    /// A needed privilege (type guard, property guard, or the one asked) is not held.
    MissingPrivilege,
    /// The privilege asked is granted but a privilege it requires is not effective.
    UnmetDependency,
    /// Restricted mode locks Create/Change/Delete on the object's type.
    RestrictedMode,
    /// The request is malformed (a privilege without an application, nothing to check).
    InvalidRequest,
    /// Evaluation failed inside authzd; fail closed.
    Internal,
}

impl Reason {
    /// Every reason, in the order of their codes (the proto enum's values 1..=18).
    pub const ALL: [Reason; 18] = [
        Reason::Allowed,
        Reason::OpenWhenUnconfigured,
        Reason::UnknownTenant,
        Reason::NotLoaded,
        Reason::UnknownSubject,
        Reason::DisabledSubject,
        Reason::UnknownObject,
        Reason::CrossTenant,
        Reason::UnknownApplication,
        Reason::UnknownPrivilege,
        Reason::Partition,
        Reason::ExplicitDeny,
        Reason::NoGrant,
        Reason::MissingPrivilege,
        Reason::UnmetDependency,
        Reason::RestrictedMode,
        Reason::InvalidRequest,
        Reason::Internal,
    ];

    /// Whether the decision is an allow.
    pub const fn is_allowed(self) -> bool {
        matches!(self, Reason::Allowed | Reason::OpenWhenUnconfigured)
    }

    /// The stable upper-case code used on the wire and in logs (`EXPLICIT_DENY`).
    pub const fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "ALLOWED",
            Reason::OpenWhenUnconfigured => "OPEN_WHEN_UNCONFIGURED",
            Reason::UnknownTenant => "UNKNOWN_TENANT",
            Reason::NotLoaded => "NOT_LOADED",
            Reason::UnknownSubject => "UNKNOWN_SUBJECT",
            Reason::DisabledSubject => "DISABLED_SUBJECT",
            Reason::UnknownObject => "UNKNOWN_OBJECT",
            Reason::CrossTenant => "CROSS_TENANT",
            Reason::UnknownApplication => "UNKNOWN_APPLICATION",
            Reason::UnknownPrivilege => "UNKNOWN_PRIVILEGE",
            Reason::Partition => "PARTITION",
            Reason::ExplicitDeny => "EXPLICIT_DENY",
            Reason::NoGrant => "NO_GRANT",
            Reason::MissingPrivilege => "MISSING_PRIVILEGE",
            Reason::UnmetDependency => "UNMET_DEPENDENCY",
            Reason::RestrictedMode => "RESTRICTED_MODE",
            Reason::InvalidRequest => "INVALID_REQUEST",
            Reason::Internal => "INTERNAL",
        }
    }
}

/// An object named by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    /// Object type. `Folder`, `Person`, `AccessGroup` and `Role` name those entities.
    pub kind: &'a str,
    /// Object id.
    pub id: &'a str,
    /// The tenant the caller believes the object is in; a different tenant
    /// than the request's is `CROSS_TENANT`.
    pub tenant: Option<&'a str>,
}

/// One question (SPEC §4): may `subject`, in the context of `application`, do
/// `permission` on `object`, holding `privilege`, touching `property`?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckRequest<'a> {
    /// Person id.
    pub subject: &'a str,
    /// Application context (catalog name).
    pub application: Option<&'a str>,
    /// Permission bit; default: the privilege's declared permission, else Read.
    pub permission: Option<Perm>,
    /// Object to check the permission on.
    pub object: Option<ObjectRef<'a>>,
    /// Privilege that must be effective (needs `application`).
    pub privilege: Option<&'a str>,
    /// Property touched (needs `object`); property guards apply.
    pub property: Option<&'a str>,
}

/// A decision: allowed or not, why, and at which revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The first failing part, or why it was allowed: whether the check is
    /// allowed follows from it ([`Decision::allowed`]), so the two cannot disagree.
    pub reason: Reason,
    /// Snapshot revision the decision was made at.
    pub revision: Revision,
}

impl Decision {
    /// A decision for `reason` at `revision`.
    pub const fn new(reason: Reason, revision: Revision) -> Self {
        Decision { reason, revision }
    }

    /// Whether every part holds (the reason is an allowing one).
    pub const fn allowed(&self) -> bool {
        self.reason.is_allowed()
    }
}

/// Where a person's privileges in an application come from (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivilegeSource {
    /// A legacy annex `role` option decides alone (`ges.role = Administrator`).
    LegacyAnnex {
        /// Annex section that decided (`ges` or `gms`).
        section: String,
        /// Legacy role name found there.
        role: String,
    },
    /// The union of readable assigned roles.
    Roles,
    /// The application's `open_when_unconfigured` rule.
    OpenWhenUnconfigured,
}

/// A person's effective privileges in one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePrivileges {
    /// Where they come from.
    pub source: PrivilegeSource,
    /// Effective privileges (canonical names, catalog order).
    pub privileges: Vec<String>,
    /// Granted but not effective because a required privilege is missing.
    pub unmet: Vec<String>,
    /// The roles that applied (readable, holding a privilege of the application), by name.
    pub roles: Vec<String>,
    /// Roles assigned but not applied because the person cannot Read them.
    pub unreadable_roles: Vec<String>,
    /// The primary role (most access, ties by the catalog's `role_rank`).
    pub primary_role: Option<String>,
}

/// A listing request (SPEC §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRequest<'a> {
    /// Person id.
    pub subject: &'a str,
    /// Object type to list.
    pub kind: &'a str,
    /// Only objects under this folder (recursively).
    pub folder: Option<&'a str>,
    /// Permission needed on each object (default Read).
    pub permission: Perm,
    /// Application context: its guards and restricted mode apply.
    pub application: Option<&'a str>,
    /// Continue after this object id (exclusive).
    pub after: Option<&'a str>,
    /// At most this many results.
    pub limit: usize,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleObject {
    /// Object id.
    pub id: String,
    /// Object name.
    pub name: String,
    /// Folder id.
    pub folder: String,
    /// Properties the person may read (all when no property guard applies).
    pub properties: Vec<(String, String)>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Objects in id order.
    pub items: Vec<VisibleObject>,
    /// Id to continue after, when more may follow.
    pub next_after: Option<String>,
    /// Revision the page was computed at.
    pub revision: Revision,
}

/// One object in a listing, borrowed from the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleRef<'v> {
    /// Object id.
    pub id: &'v str,
    /// Object name.
    pub name: &'v str,
    /// Folder id.
    pub folder: &'v str,
    /// Properties the person may read.
    pub properties: Vec<(&'v str, &'v str)>,
}

/// A page of a listing, borrowed from the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPageRef<'v> {
    /// Objects in id order.
    pub items: Vec<VisibleRef<'v>>,
    /// Id to continue after, when more may follow.
    pub next_after: Option<&'v str>,
    /// Revision the page was computed at.
    pub revision: Revision,
}

/// One person a reverse lookup allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSubject<'v> {
    /// Person id.
    pub person: &'v str,
    /// `Allowed` or `OpenWhenUnconfigured`.
    pub reason: Reason,
}

/// A page of the persons a check allows ([`crate::engine::TenantView::allowed_subjects`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectsPage<'v> {
    /// Persons in id order.
    pub items: Vec<AllowedSubject<'v>>,
    /// Id to continue after, when more may follow.
    pub next_after: Option<&'v str>,
    /// Revision the page was computed at.
    pub revision: Revision,
}

/// Where a holder's privileges in the application come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderSource<'v> {
    /// A legacy annex `role` option decides alone.
    LegacyAnnex {
        /// Annex section that decided (`ges` or `gms`).
        section: &'v str,
        /// Legacy role name found there.
        role: &'v str,
    },
    /// The union of readable assigned roles.
    Roles,
    /// The application's `open_when_unconfigured` rule.
    OpenWhenUnconfigured,
}

/// One person for whom a privilege is effective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder<'v> {
    /// Person id.
    pub person: &'v str,
    /// Where the person's privileges in the application come from.
    pub source: HolderSource<'v>,
    /// With [`HolderSource::Roles`]: the applied roles granting the privilege, as (id, name).
    pub roles: Vec<(&'v str, &'v str)>,
}

/// A page of a privilege's holders ([`crate::engine::TenantView::privilege_holders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldersPage<'v> {
    /// The privilege's canonical name.
    pub privilege: &'v str,
    /// Holders in person id order.
    pub items: Vec<Holder<'v>>,
    /// Id to continue after, when more may follow.
    pub next_after: Option<&'v str>,
    /// Revision the page was computed at.
    pub revision: Revision,
}
