//! Permission bits of object-based access control (SPEC §2) as a one-byte set.
//!
//! A set is a `u8` so an ACE entry, an inherited ACL row and a check request all
//! carry permissions by value: no allocation, one AND per test.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One elementary permission on a configuration object or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Perm {
    /// See the object and its properties.
    Read = 0,
    /// Create objects inside a folder.
    Create = 1,
    /// Modify the object.
    Change = 2,
    /// Run the object (scripts, applications) or perform a task on it.
    Execute = 3,
    /// Remove the object.
    Delete = 4,
    /// See the object's access control entries.
    ReadPermissions = 5,
    /// Edit the object's access control entries.
    ChangePermissions = 6,
}

impl Perm {
    /// Every permission, in bit order.
    pub const ALL: [Perm; 7] = [
        Perm::Read,
        Perm::Create,
        Perm::Change,
        Perm::Execute,
        Perm::Delete,
        Perm::ReadPermissions,
        Perm::ChangePermissions,
    ];

    /// The permission's canonical name, as written in files and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Perm::Read => "Read",
            Perm::Create => "Create",
            Perm::Change => "Change",
            Perm::Execute => "Execute",
            Perm::Delete => "Delete",
            Perm::ReadPermissions => "ReadPermissions",
            Perm::ChangePermissions => "ChangePermissions",
        }
    }

    /// Parses a canonical name (case-sensitive, as everywhere in authzd).
    pub fn parse(s: &str) -> Option<Perm> {
        Perm::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The single-bit mask of this permission.
    pub const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The permission with this bit index, if any.
    pub fn from_index(i: u8) -> Option<Perm> {
        Perm::ALL.get(i as usize).copied()
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Perm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Perm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Perm::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown permission `{s}` (expected one of Read, Create, Change, Execute, Delete, ReadPermissions, ChangePermissions)"
            ))
        })
    }
}

/// A set of permissions. Serialized as a list of names; `All` expands to every bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct PermSet(pub u8);

impl PermSet {
    /// The empty set.
    pub const EMPTY: PermSet = PermSet(0);
    /// Every permission.
    pub const ALL: PermSet = PermSet(0x7f);

    /// Whether `p` is in the set.
    pub const fn contains(self, p: Perm) -> bool {
        self.0 & p.bit() != 0
    }
    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// The set with `p` added.
    pub const fn with(self, p: Perm) -> PermSet {
        PermSet(self.0 | p.bit())
    }
    /// Union of two sets.
    pub const fn union(self, o: PermSet) -> PermSet {
        PermSet(self.0 | o.0)
    }
    /// The permissions of the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Perm> {
        Perm::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Perm> for PermSet {
    fn from_iter<I: IntoIterator<Item = Perm>>(it: I) -> Self {
        it.into_iter().fold(PermSet::EMPTY, PermSet::with)
    }
}

impl fmt::Display for PermSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Perm::name).collect();
        write!(f, "[{}]", names.join(", "))
    }
}

impl Serialize for PermSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = self.iter().map(Perm::name).collect();
        names.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PermSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut set = PermSet::EMPTY;
        for n in names {
            if n == "All" {
                set = PermSet::ALL;
                continue;
            }
            let p = Perm::parse(&n).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown permission `{n}` (expected All or one of Read, Create, Change, Execute, Delete, ReadPermissions, ChangePermissions)"
                ))
            })?;
            set = set.with(p);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bits_are_distinct() {
        let mut seen = 0u8;
        for p in Perm::ALL {
            assert_eq!(Perm::parse(p.name()), Some(p));
            assert_eq!(seen & p.bit(), 0);
            seen |= p.bit();
        }
        assert_eq!(PermSet(seen), PermSet::ALL);
        assert_eq!(Perm::parse("read"), None, "names are case-sensitive");
    }
}
