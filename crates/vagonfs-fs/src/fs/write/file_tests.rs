//! [`SpooledFile`]'s record order, at the seams between its own steps (interleavings that
//! tests through the public calls reach only by chance; the model test found this one).

use crate::api::Space;

use super::*;

fn target(name: &str) -> FileTarget {
    FileTarget {
        space: Space::Shared,
        parent_id: None,
        name: name.to_string(),
        display_path: name.to_string(),
    }
}

fn on_disk(f: &SpooledFile) -> JournalRecord {
    JournalRecord::read(&JournalRecord::path(&f.dir, f.spool.id())).expect("record on disk")
}

/// An upload's `complete` landed; a truncate changed the bytes meanwhile; the upload's
/// bookkeeping saw the new generation and issued a `dirty` record, but its task ended (a
/// crash) before the write ran. The truncate's own record write must not be skipped as
/// "already dirty": the disk still said `uploading` with the landed id, so recovery would
/// have taken the old bytes as done and dropped the truncate.
#[tokio::test]
async fn a_change_is_journaled_even_when_a_dirty_record_is_still_on_its_way() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = SpoolDir::open(&tmp.path().join("spools")).expect("dir");
    let f = SpooledFile::create_new(&dir, target("a.txt"))
        .await
        .expect("create");
    f.write(0, &b"hello world"[..]).await.expect("write");
    // The upload's `created` hook: `uploading` with the attempt's id, on disk.
    let created = {
        let mut m = f.meta();
        m.record = Some(JournalState::Uploading);
        m.pending_upload_id = Some(1002);
        let rec = f.record_of(&m);
        f.next_op(&mut m, RecordOp::Write(Box::new(rec)))
    };
    f.apply(created).await.expect("created");
    assert_eq!(on_disk(&f).state, JournalState::Uploading);
    // The truncate's first half: the bytes.
    f.spool.set_len(0).await.expect("set_len");
    // The upload's bookkeeping, after `complete`: written meanwhile, so `dirty` again; the op
    // is issued and never applied.
    {
        let mut m = f.meta();
        m.pending_upload_id = None;
        m.record = Some(JournalState::Dirty);
        let rec = f.record_of(&m);
        let _lost = f.next_op(&mut m, RecordOp::Write(Box::new(rec)));
    }
    // The truncate's second half.
    f.note_mutation(true).await.expect("journal");
    let rec = on_disk(&f);
    assert_eq!(
        (rec.state, rec.size, rec.generation),
        (JournalState::Dirty, 0, f.generation()),
        "the truncate is on disk before truncate(2) answers"
    );
    // Once on disk, the next change writes nothing more.
    let applied = f.journal_applied();
    f.write(0, &b"x"[..]).await.expect("write");
    assert_eq!(f.journal_applied(), applied);
}
