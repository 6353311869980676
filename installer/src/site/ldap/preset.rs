//! The two directory flavours as data: which attributes and object classes name users
//! and groups. These are the values Keycloak's LDAP user federation is configured with
//! (`vendor`, `usernameLDAPAttribute`, `rdnLDAPAttribute`, `uuidLDAPAttribute`,
//! `userObjectClasses`, and the group mapper's `group.object.classes` and
//! `membership.ldap.attribute`), so the live check and the realm speak of the same thing.

use std::fmt;

use serde::Serialize;

/// Which kind of directory the site runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// OpenLDAP (and other RFC 4519/2798 directories with `inetOrgPerson` users).
    #[serde(rename = "openldap")]
    OpenLdap,
    /// Microsoft Active Directory.
    ActiveDirectory,
}

impl Preset {
    pub const ALL: [Preset; 2] = [Preset::OpenLdap, Preset::ActiveDirectory];

    /// The answers-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::OpenLdap => "openldap",
            Preset::ActiveDirectory => "active-directory",
        }
    }

    pub fn parse(s: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The attribute names and classes of this flavour.
    pub fn schema(self) -> Schema {
        match self {
            Preset::OpenLdap => Schema {
                vendor: "other",
                username_attribute: "uid",
                rdn_attribute: "uid",
                uuid_attribute: "entryUUID",
                email_attribute: "mail",
                user_object_classes: &["inetOrgPerson", "organizationalPerson"],
                group_object_class: "groupOfNames",
                group_name_attribute: "cn",
                membership_attribute: "member",
            },
            Preset::ActiveDirectory => Schema {
                vendor: "ad",
                username_attribute: "sAMAccountName",
                rdn_attribute: "cn",
                uuid_attribute: "objectGUID",
                email_attribute: "mail",
                user_object_classes: &["person", "organizationalPerson", "user"],
                group_object_class: "group",
                group_name_attribute: "cn",
                membership_attribute: "member",
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a preset fixes. Field names follow Keycloak's LDAP provider config keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Schema {
    /// Keycloak's `vendor`: `other` (OpenLDAP) or `ad`.
    pub vendor: &'static str,
    /// `usernameLDAPAttribute`: the login name.
    pub username_attribute: &'static str,
    /// `rdnLDAPAttribute`: the attribute naming a user entry in its DN.
    pub rdn_attribute: &'static str,
    /// `uuidLDAPAttribute`: a stable id that survives renames.
    pub uuid_attribute: &'static str,
    /// The `email` user attribute mapper's LDAP attribute.
    pub email_attribute: &'static str,
    /// `userObjectClasses`: every user entry has all of these.
    pub user_object_classes: &'static [&'static str],
    /// Group mapper `group.object.classes`.
    pub group_object_class: &'static str,
    /// Group mapper `group.name.ldap.attribute`.
    pub group_name_attribute: &'static str,
    /// Group mapper `membership.ldap.attribute` (its values are member DNs).
    pub membership_attribute: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_their_answers_spelling() {
        for p in Preset::ALL {
            assert_eq!(Preset::parse(p.as_str()), Some(p));
        }
        assert_eq!(Preset::parse("ad"), None);
        assert_eq!(serde_json::to_string(&Preset::ActiveDirectory).unwrap(), "\"active-directory\"");
        assert_eq!(serde_json::to_string(&Preset::OpenLdap).unwrap(), "\"openldap\"");
    }

    #[test]
    fn active_directory_names_users_by_sam_account_name_and_keeps_the_guid() {
        let s = Preset::ActiveDirectory.schema();
        assert_eq!((s.vendor, s.username_attribute, s.rdn_attribute), ("ad", "sAMAccountName", "cn"));
        assert_eq!(s.uuid_attribute, "objectGUID");
        assert_eq!(s.user_object_classes, ["person", "organizationalPerson", "user"]);
        assert_eq!((s.group_object_class, s.membership_attribute), ("group", "member"));
        let o = Preset::OpenLdap.schema();
        assert_eq!((o.username_attribute, o.rdn_attribute, o.uuid_attribute), ("uid", "uid", "entryUUID"));
        assert_eq!(o.user_object_classes, ["inetOrgPerson", "organizationalPerson"]);
        assert_eq!((o.group_object_class, o.membership_attribute), ("groupOfNames", "member"));
    }
}
