//! Tree walks list the next folders ahead (`tree_walk.rs`), against the in-memory double:
//! a depth-first walk waits on few listings and asks each folder once; one opendir alone, or a
//! folder opened long after its parent, lists nothing ahead. Requests are counted, never timed.

use std::sync::Arc;
use std::time::Duration;

use crate::api::faulty::ApiMethod;
use crate::fs::*;

use super::core::{Server, config, mount, server};
use super::driver::{ino, list, names};

/// A server holding `t/d0..d9`, each with `e0..e2`, and a mount of it that opened `t`.
async fn opened_top() -> (Arc<Server>, Arc<VagonFs>) {
    let api = server();
    let t = api.inner().add_dir(Space::Shared, None, "t");
    for i in 0..10 {
        let d = api
            .inner()
            .add_dir(Space::Shared, Some(t), &format!("d{i}"));
        for j in 0..3 {
            api.inner()
                .add_dir(Space::Shared, Some(d), &format!("e{j}"));
        }
    }
    let fs = mount(&api, RootSpec::Space(Space::Shared), config());
    let t = ino(&fs, "t").await;
    list(&fs, t).await;
    (api, fs)
}

/// `find t`: opendir of t, then of each folder in turn, depth first. Once the walk went down
/// one level, the rest of t's folders and each entered folder's own are listed ahead: the walk
/// finds them listed, and every folder is asked for once.
#[tokio::test]
async fn a_depth_first_walk_finds_the_next_folders_listed_and_asks_each_once() {
    let (api, fs) = opened_top().await;
    let d0 = ino(&fs, "t/d0").await;
    list(&fs, d0).await;
    fs.wait_background().await;
    let lists = api.calls(ApiMethod::ListFiles);
    // The root, t, and every folder below t: d0..d9 and d0's e0..e2 (entered), ahead.
    assert_eq!(lists, 2 + 10 + 3, "listed ahead once the walk went down");
    for i in 0..10 {
        let d = ino(&fs, &format!("t/d{i}")).await;
        let shown = names(&list(&fs, d).await);
        assert!(shown.contains(&"e2".to_string()), "{shown:?}");
        for j in 0..3 {
            let e = ino(&fs, &format!("t/d{i}/e{j}")).await;
            list(&fs, e).await;
        }
        fs.wait_background().await;
    }
    assert_eq!(
        api.calls(ApiMethod::ListFiles),
        2 + 10 + 10 * 3,
        "each folder listed once"
    );
}

/// One folder opened (an editor, a shell), or a folder opened long after its parent (a user
/// browsing slowly): nothing is listed ahead.
#[tokio::test(start_paused = true)]
async fn one_opendir_or_a_slow_browse_lists_nothing_ahead() {
    let (api, fs) = opened_top().await;
    fs.wait_background().await;
    assert_eq!(api.calls(ApiMethod::ListFiles), 2, "the root and t");
    tokio::time::advance(Duration::from_secs(6)).await;
    let d0 = ino(&fs, "t/d0").await;
    list(&fs, d0).await;
    fs.wait_background().await;
    assert_eq!(api.calls(ApiMethod::ListFiles), 3, "d0 only");
}
