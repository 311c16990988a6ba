use super::*;

/// The OWASP minimum, to keep the tests quick.
const FAST: KdfParams = KdfParams {
    m_kib: KdfParams::MIN_M_KIB,
    t: 2,
    p: 1,
};

fn pass(p: &str) -> Unlock {
    Unlock::none().with_passphrase(p.as_bytes().to_vec())
}

fn new_vault(dir: &Path) -> Vault {
    Vault::create(&dir.join(VAULT_FILE), &pass("correct horse"), FAST).unwrap()
}

#[test]
fn set_list_get_replace_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    assert_eq!(v.set("alpaca_key", b"AKCANARY-1").unwrap(), (SetOutcome::Created, 1));
    assert_eq!(v.set("alpaca_key", b"AKCANARY-2").unwrap(), (SetOutcome::Replaced, 2));
    v.set("other", b"x").unwrap();
    let names: Vec<_> = v.list().unwrap().into_iter().map(|m| (m.name, m.version)).collect();
    assert_eq!(names, vec![("alpaca_key".into(), 2), ("other".into(), 1)]);
    assert_eq!(v.get("alpaca_key").unwrap().unwrap().as_slice(), b"AKCANARY-2");
    // Reopened from disk with the passphrase.
    let v2 = Vault::open(v.path(), &pass("correct horse")).unwrap();
    assert_eq!(v2.get("alpaca_key").unwrap().unwrap().as_slice(), b"AKCANARY-2");
    assert!(v2.delete("other").unwrap());
    assert!(!v2.delete("other").unwrap());
    // The first handle sees the other's write.
    assert!(!v.contains("other").unwrap());
    // No plaintext on disk, in the backup, or in Debug output.
    for f in [VAULT_FILE, "vault.abv.bak"] {
        let raw = std::fs::read(dir.path().join(f)).unwrap();
        assert!(!raw.windows(8).any(|w| w == b"AKCANARY"), "{f}");
    }
    assert!(!format!("{v:?}").contains("CANARY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(v.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn bad_names_and_values_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    for bad in ["", "UPPER", "has space", "algobanana.reserved", &"x".repeat(65)] {
        let e = v.set(bad, b"v").unwrap_err().to_string();
        assert!(e.contains("lowercase"), "{bad}: {e}");
    }
    assert!(v.set("ok", b"").unwrap_err().to_string().contains("empty"));
    assert!(
        v.set("ok", &vec![0; 70_000])
            .unwrap_err()
            .to_string()
            .contains("64 KiB")
    );
}

#[test]
fn wrong_passphrase_missing_unlock_and_key_file_slots() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/vault.key");
    unlock::create_key_file(&key).unwrap();
    let path = dir.path().join(VAULT_FILE);
    let both = pass("right").with_key_file(&key);
    let v = Vault::create(&path, &both, FAST).unwrap();
    v.set("s", b"value").unwrap();
    assert_eq!(v.slot_kinds(), vec!["passphrase", "key-file"]);

    let e = Vault::open(&path, &pass("wrong")).unwrap_err();
    assert!(matches!(e, VaultError::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("did not open with the passphrase"), "{e}");
    let e = Vault::open(&path, &Unlock::none()).unwrap_err();
    assert!(e.to_string().contains("ALGOBANANA_VAULT_PASSPHRASE"), "{e}");
    // Either slot opens it.
    Vault::open(&path, &Unlock::none().with_key_file(&key)).unwrap();
    Vault::open(&path, &pass("right")).unwrap();
    // Another key file does not.
    let other = dir.path().join("other.key");
    unlock::create_key_file(&other).unwrap();
    let e = Vault::open(&path, &Unlock::none().with_key_file(&other)).unwrap_err();
    assert!(e.to_string().contains("key file"), "{e}");

    // Rekey to a new passphrase only: the old ones stop working, values stay.
    v.rekey(&pass("new"), FAST).unwrap();
    assert!(Vault::open(&path, &pass("right")).is_err());
    assert!(Vault::open(&path, &Unlock::none().with_key_file(&key)).is_err());
    let v = Vault::open(&path, &pass("new")).unwrap();
    assert_eq!(v.get("s").unwrap().unwrap().as_slice(), b"value");

    // Rotate: a new data key, same values.
    let before = std::fs::read_to_string(&path).unwrap();
    let v = v.rotate(&pass("newer"), FAST).unwrap();
    assert_eq!(v.get("s").unwrap().unwrap().as_slice(), b"value");
    let after = std::fs::read_to_string(&path).unwrap();
    let ct = |s: &str| {
        serde_json::from_str::<Document>(s).unwrap().records[0]
            .ciphertext
            .clone()
    };
    assert_ne!(ct(&before), ct(&after));
    assert!(Vault::open(&path, &pass("newer")).is_ok());
}

fn edit(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut doc);
    std::fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

#[test]
fn every_kind_of_tampering_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(VAULT_FILE);
    let pristine = {
        let v = new_vault(dir.path());
        v.set("paper_key", b"paper").unwrap();
        v.set("live_key", b"live").unwrap();
        std::fs::read(&path).unwrap()
    };
    type Edit = fn(&mut serde_json::Value);
    let cases: Vec<(&str, Edit)> = vec![
        ("flipped ciphertext bit", |d| {
            let ct = d["records"][0]["ciphertext"].as_str().unwrap().to_owned();
            let mut bytes = base64::engine::general_purpose::STANDARD.decode(ct).unwrap();
            bytes[0] ^= 1;
            d["records"][0]["ciphertext"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
        }),
        ("swapped records", |d| {
            let a = d["records"][0]["ciphertext"].clone();
            let an = d["records"][0]["nonce"].clone();
            d["records"][0]["ciphertext"] = d["records"][1]["ciphertext"].clone();
            d["records"][0]["nonce"] = d["records"][1]["nonce"].clone();
            d["records"][1]["ciphertext"] = a;
            d["records"][1]["nonce"] = an;
        }),
        ("renamed record", |d| d["records"][0]["name"] = "renamed".into()),
        ("deleted record", |d| {
            d["records"].as_array_mut().unwrap().remove(1);
        }),
        ("version rolled back", |d| d["records"][0]["version"] = 0.into()),
        ("generation edited", |d| d["generation"] = 1.into()),
        ("mac removed", |d| d["mac"] = "".into()),
    ];
    for (what, f) in cases {
        std::fs::write(&path, &pristine).unwrap();
        edit(&path, f);
        let e = Vault::open(&path, &pass("correct horse")).unwrap_err();
        assert!(matches!(e, VaultError::Tampered { .. }), "{what}: {e}");
        assert!(e.to_string().contains("altered or damaged"), "{what}: {e}");
    }
    // A swapped record with its AAD-relevant fields intact still fails even
    // when the attacker also recomputes nothing: covered above; and a
    // truncated or non-JSON file is a format error.
    std::fs::write(&path, &pristine[..pristine.len() / 2]).unwrap();
    let e = Vault::open(&path, &pass("correct horse")).unwrap_err();
    assert!(matches!(e, VaultError::Format { .. }), "{e}");
    std::fs::write(&path, &pristine).unwrap();
    Vault::open(&path, &pass("correct horse")).unwrap();
}

#[test]
fn a_group_readable_vault_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(v.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Vault::open(v.path(), &pass("correct horse")).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}

#[test]
fn weak_kdf_parameters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Vault::create(
        &dir.path().join(VAULT_FILE),
        &pass("x"),
        KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("below the minimum"), "{e}");
}
