#!/bin/bash
# Airlock realm sync: makes the running Keycloak's realm equal to the realm this
# release ships, for the parts Airlock owns (docs/platform.md, "Realm changes on
# upgrade"). It runs in the Keycloak image itself (kcadm.sh, the admin REST API), as
# the Job the installer lays beside the Keycloak chart, once per realm content.
#
# What it owns and how it converges:
#   - the realm's own settings in realm.json (a partial update: settings it does not
#     name stay as they are);
#   - each client in the plan, found by clientId: created or updated in place (its id,
#     sessions and role mappings stay), and its protocol mappers made exactly the
#     shipped ones (by name: updated, created, others deleted);
#   - the LDAP user federation component, found by name under the realm: updated in
#     place, never deleted and re-created (users it imported are linked to its id),
#     and its mapper sub-components made exactly the shipped ones.
# Users, sessions, credentials, other clients and components are never touched.
#
# Secrets: the shipped files hold `${NAME}` placeholders, as the realm import does;
# they are filled from the environment (the realm-env Secret) with bash's own string
# replacement into 0600 files under the work directory, never on a command line. The
# admin password reaches kcadm.sh as KC_CLI_PASSWORD. Nothing secret is printed.
set -euo pipefail
umask 077

say() { printf 'realm sync: %s\n' "$*"; }

dir=${AIRLOCK_REALM_SYNC_DIR:-/opt/airlock/realm-sync}
work=${AIRLOCK_REALM_SYNC_WORK:-/tmp/realm-sync}
kcadm=${AIRLOCK_KCADM:-/opt/keycloak/bin/kcadm.sh}
tries=${AIRLOCK_REALM_SYNC_TRIES:-90}
pause=${AIRLOCK_REALM_SYNC_PAUSE:-10}
: "${KEYCLOAK_URL:?the Keycloak URL (KEYCLOAK_URL) is not set}"
: "${KEYCLOAK_ADMIN_USER:?the admin user (KEYCLOAK_ADMIN_USER) is not set}"
: "${KC_CLI_PASSWORD:?the admin password (KC_CLI_PASSWORD) is not set}"
if [[ ! -x $kcadm ]]; then
    say "$kcadm is missing: this Job must run the Keycloak image"
    exit 1
fi
mkdir -p "$work"
export HOME=$work
config=$work/kcadm.config

kc() { "$kcadm" "$@" --config "$config" </dev/null; }

# The shipped file with its placeholders filled, as a 0600 copy; prints its path.
placeholders=()
fill() {
    local text name
    text=$(<"$dir/$1")
    for name in "${placeholders[@]}"; do
        # An unset variable leaves its placeholder, as the realm import does.
        [[ -v $name ]] && text=${text//"\${$name}"/"${!name}"}
    done
    printf '%s' "$text" >"$work/$1"
    printf '%s' "$work/$1"
}

# Keycloak may still be starting (or restarting on the new release): log in until it
# answers, then go on. kcadm.sh keeps its token in the 0600 config file.
attempt=1
until kc config credentials --server "$KEYCLOAK_URL" --realm master --user "$KEYCLOAK_ADMIN_USER" >"$work/login.log" 2>&1; do
    if ((attempt >= tries)); then
        say "Keycloak at $KEYCLOAK_URL did not accept the admin login after $tries attempts; last answer:"
        cat "$work/login.log" >&2
        exit 1
    fi
    say "waiting for Keycloak at $KEYCLOAK_URL (attempt $attempt of $tries)"
    attempt=$((attempt + 1))
    sleep "$pause"
done
say "logged in to $KEYCLOAK_URL as the bootstrap admin"

# id,name lines of a listing, into the associative array named $1.
declare -A existing
list() {
    local out id name
    existing=()
    out=$(kc get "$@" --fields id,name --format csv --noquotes)
    while IFS=, read -r id name; do
        if [[ -n $id ]]; then
            existing[$name]=$id
        fi
    done <<<"$out"
    return 0
}

# Makes the children listed by `kc get ${listing[@]}` (created at path $1) exactly the
# shipped ones, given as name<TAB>file lines in $2, named $3 in the output; extra
# kcadm arguments for create and update follow.
listing=()
converge() {
    local path=$1 shipped=$2 what=$3
    shift 3
    local name file updated=0 created=0 deleted=0
    list "${listing[@]}" -r "$realm"
    while IFS=$'\t' read -r name file; do
        if [[ -z $name ]]; then
            continue
        fi
        if [[ -n ${existing[$name]-} ]]; then
            kc update "$path/${existing[$name]}" -r "$realm" -f "$(fill "$file")" -s "id=${existing[$name]}" "$@" >/dev/null
            unset "existing[$name]"
            updated=$((updated + 1))
        else
            kc create "$path" -r "$realm" -f "$(fill "$file")" "$@" >/dev/null
            created=$((created + 1))
        fi
    done <<<"$shipped"
    for name in "${!existing[@]}"; do
        kc delete "$path/${existing[$name]}" -r "$realm" >/dev/null
        say "  deleted $what \`$name\` (not in this release)"
        deleted=$((deleted + 1))
    done
    say "  $what: $updated updated, $created created, $deleted deleted"
}

realm=
client_mappers=
ldap_mappers=
client_id=
ldap_name=
flush_client() {
    [[ -z $client_id ]] && return 0
    local id
    id=$(kc get clients -r "$realm" -q "clientId=$client_id" --fields id --format csv --noquotes)
    if [[ -n $id ]]; then
        kc update "clients/$id" -r "$realm" -f "$(fill "$client_file")" >/dev/null
        say "client $client_id: updated"
    else
        id=$(kc create clients -r "$realm" -f "$(fill "$client_file")" -i)
        say "client $client_id: created"
    fi
    listing=("clients/$id/protocol-mappers/models")
    converge "clients/$id/protocol-mappers/models" "$client_mappers" "protocol mappers"
    client_id=
    client_mappers=
}
flush_ldap() {
    [[ -z $ldap_name ]] && return 0
    local realm_id id
    realm_id=$(kc get "realms/$realm" --fields id --format csv --noquotes)
    id=$(kc get components -r "$realm" -q "parent=$realm_id" -q "type=org.keycloak.storage.UserStorageProvider" \
        -q "name=$ldap_name" --fields id --format csv --noquotes)
    if [[ -n $id ]]; then
        kc update "components/$id" -r "$realm" -f "$(fill "$ldap_file")" -s "id=$id" -s "parentId=$realm_id" >/dev/null
        say "user federation $ldap_name: updated"
    else
        id=$(kc create components -r "$realm" -f "$(fill "$ldap_file")" -s "parentId=$realm_id" -i)
        say "user federation $ldap_name: created"
    fi
    listing=(components -q "parent=$id" -q "type=org.keycloak.storage.ldap.mappers.LDAPStorageMapper")
    converge components "$ldap_mappers" "federation mappers" -s "parentId=$id"
    ldap_name=
    ldap_mappers=
}

# plan.tsv: what to converge, in order, tab-separated (kind, name, file).
while IFS=$'\t' read -r kind name file; do
    case $kind in
    '' | '#'*) ;;
    placeholder) placeholders+=("$name") ;;
    realm)
        realm=$name
        kc update "realms/$realm" -f "$(fill "$file")" >/dev/null
        say "realm $realm: settings updated"
        ;;
    client)
        flush_client
        client_id=$name
        client_file=$file
        ;;
    client-mapper) client_mappers+="$name"$'\t'"$file"$'\n' ;;
    ldap)
        flush_ldap
        ldap_name=$name
        ldap_file=$file
        ;;
    ldap-mapper) ldap_mappers+="$name"$'\t'"$file"$'\n' ;;
    *)
        say "unknown step \`$kind\` in $dir/plan.tsv"
        exit 1
        ;;
    esac
done <"$dir/plan.tsv"
flush_client
flush_ldap
rm -f "$work"/*.json "$config"
say "realm $realm matches this release"
