//! The state directory against real files: instance registration, liveness and claiming.

use super::*;

#[test]
fn a_live_instance_is_live_and_a_dropped_one_is_dead_and_claimed_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instances::open(dir.path(), "w/1").unwrap();
    let b = Instances::open(dir.path(), "w/1").unwrap();
    assert_ne!(a.instance_id(), b.instance_id());
    assert_eq!(a.liveness(a.instance_id()), Liveness::Mine);
    assert_eq!(a.liveness(b.instance_id()), Liveness::Live);
    assert_eq!(b.liveness(a.instance_id()), Liveness::Live);

    let dead = a.instance_id().to_owned();
    drop(a);
    let c = Instances::open(dir.path(), "w/1").unwrap();
    assert_eq!(c.claim_dead(), vec![dead.clone()]);
    // b cannot claim what c holds.
    assert_eq!(b.liveness(&dead), Liveness::Live);
    assert!(b.claim_dead().is_empty());
    c.release(&dead);
    assert_eq!(b.liveness(&dead), Liveness::Dead, "no state left: dead");
    assert!(!dir.path().join("workers/w%2F1").join(&dead).exists());
}

#[test]
fn other_worker_ids_are_not_scanned() {
    let dir = tempfile::tempdir().unwrap();
    drop(Instances::open(dir.path(), "one").unwrap());
    let other = Instances::open(dir.path(), "two").unwrap();
    assert!(other.claim_dead().is_empty());
}

#[test]
fn the_journal_records_updates_hands_over_and_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instances::open(dir.path(), "w").unwrap();
    a.record_claim("t-1").unwrap();
    a.record_claim("t-2").unwrap();
    let group = GroupRecord {
        pgid: 42,
        start_ticks: 7,
    };
    a.record_group("t-1", group).unwrap();
    a.record_workspace("t-1", Path::new("/ws/t-1")).unwrap();
    a.record_claim_sent("t-1").unwrap();
    let terminal = TerminalRecord::Failed {
        message: "exit 3".into(),
        failure_reason: "agent_invocation".into(),
        exit_code: Some(3),
    };
    a.record_terminal("t-1", terminal.clone()).unwrap();
    a.record_group("not-journaled", group).unwrap();
    a.forget("t-2");
    let journal = a.journal();
    assert_eq!(
        journal,
        vec![JournalEntry {
            task_id: "t-1".into(),
            claim_sent: true,
            groups: vec![group],
            workspace: Some("/ws/t-1".into()),
            terminal: Some(terminal),
        }]
    );

    let dead = a.instance_id().to_owned();
    drop(a);
    let b = Instances::open(dir.path(), "w").unwrap();
    assert_eq!(b.claim_dead(), vec![dead.clone()]);
    assert_eq!(b.journal_of(&dead), journal);
    b.take_over(&dead, "t-1").unwrap();
    b.release(&dead);
    assert_eq!(b.journal(), journal, "the entry is now b's");
    b.forget("t-1");
    assert!(b.journal().is_empty());
}

#[test]
fn an_entry_keeps_a_bounded_number_of_groups() {
    let mut entry = JournalEntry::new("t");
    for pgid in 0..10 {
        entry.push_group(GroupRecord {
            pgid,
            start_ticks: 0,
        });
    }
    assert_eq!(entry.groups.len(), journal::MAX_GROUPS);
    assert_eq!(entry.groups[0].pgid, 6);
}

#[test]
fn ids_become_single_path_components() {
    assert_eq!(path_key("abc-1_2.x"), "abc-1_2.x");
    assert_eq!(path_key("../x"), "%2E.%2Fx");
    assert_eq!(path_key(""), "%00");
}

#[test]
fn a_start_time_is_read_for_a_live_process_only() {
    let me = i32::try_from(std::process::id()).unwrap();
    assert!(start_ticks(me).is_some());
    assert_eq!(start_ticks(i32::MAX), None);
    // A record whose start time does not match is never killed.
    assert!(!kill_recorded_group(GroupRecord {
        pgid: me,
        start_ticks: start_ticks(me).unwrap() + 1,
    }));
}

#[test]
fn an_unusable_state_dir_names_the_path() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = Instances::open(file.path(), "w").unwrap_err();
    assert!(
        err.to_string().contains(&file.path().display().to_string()),
        "{err}"
    );
}
