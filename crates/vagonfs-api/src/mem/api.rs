//! The double's [`FilesApi`]: each endpoint with the emulator's answers and errors.
//!
//! Subtle cases: a file is listed only after `complete`, a folder at once; a repeated complete
//! of a finished upload is a success; an overwrite publishes under the upload's new id and
//! replaces every file of that name; `per_page` 0 is 20; a Range starting past the end is 416,
//! one ending past it a short body; a removed machine answers 404.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use super::rules::*;
use super::*;
use crate::api::name::check_name;
use crate::api::{
    ByteStream, Completed, DownloadRequested, DownloadStatus, DownloadTarget, FilePage, FilesApi,
    ListQuery, LiveEntry, MAX_PER_PAGE, MachinePage,
};

#[async_trait]
impl FilesApi for MemApi {
    async fn list_machines(&self, page: u32, per_page: u32) -> ApiResult<MachinePage> {
        let st = self.st();
        let per = per_page.clamp(1, MAX_PER_PAGE) as usize;
        let page = page.max(1);
        let start = (page as usize - 1) * per;
        let machines: Vec<Machine> = st.machines.iter().skip(start).take(per).cloned().collect();
        Ok(MachinePage {
            machines,
            count: Some(st.machines.len() as u64),
            page,
            next_page: (start + per < st.machines.len()).then_some(page + 1),
        })
    }

    async fn list_files(&self, space: Space, query: &ListQuery) -> ApiResult<FilePage> {
        let ep = "GET /files";
        let st = self.st();
        let parent = query.parent_id.filter(|p| *p != 0);
        check_parent(&st, space, parent, ep)?;
        let needle = query.search.as_ref().map(|q| q.to_lowercase());
        let items: Vec<&Node> = sorted_children(&st, space, parent)
            .into_iter()
            .filter(|n| {
                needle
                    .as_ref()
                    .is_none_or(|q| n.name.to_lowercase().contains(q))
            })
            .collect();
        let per = match query.per_page {
            0 => DEFAULT_PER_PAGE,
            n => n.min(MAX_PER_PAGE),
        } as usize;
        let page = query.page.max(1);
        let start = (page as usize - 1).saturating_mul(per);
        let entries = items
            .iter()
            .skip(start)
            .take(per)
            .map(|n| n.entry())
            .collect();
        let current = parent
            .and_then(|p| st.nodes.get(&p))
            .map(|n| CurrentFolder {
                id: n.id,
                name: n.name.clone(),
                path: None,
                parent_id: n.parent,
            });
        Ok(FilePage {
            entries,
            current,
            count: Some(items.len() as u64),
            page,
            next_page: (start.saturating_add(per) < items.len()).then_some(page + 1),
        })
    }

    async fn create(&self, req: &CreateRequest) -> ApiResult<Created> {
        let ep = "POST /files";
        let mut st = self.st();
        st.creates.push(req.clone());
        if let Err(why) = check_name(&req.name) {
            return Err(status_msg(ep, 400, &why.to_string()));
        }
        if matches!(req.space, Space::Recordings { .. }) {
            return Err(status_msg(ep, 403, "session recordings are read-only"));
        }
        let parent = req.parent_id.filter(|p| *p != 0);
        check_parent(&st, req.space, parent, ep)?;
        if req.object_type == ObjectType::Directory {
            if same_name(&st, req.space, parent, &req.name)
                .next()
                .is_some()
            {
                return Err(status_msg(ep, 409, "name already exists"));
            }
            let id = st.next_id;
            st.next_id += 1;
            st.nodes.insert(
                id,
                Node {
                    id,
                    space: req.space,
                    parent,
                    name: req.name.clone(),
                    dir: true,
                    data: Bytes::new(),
                    content_type: None,
                    modified: Some(mtime_of(id)),
                    listed_size: None,
                    link_reports_listed: false,
                },
            );
            return Ok(Created {
                id,
                uid: Some(format!("uid-{id}")),
                chunk_size_mb: None,
                upload_urls: Vec::new(),
            });
        }
        let (Some(size), Some(_)) = (req.size, req.content_type.as_ref()) else {
            return Err(status_msg(ep, 400, "size and content_type are required"));
        };
        let chunk_mb = req.chunk_size_mb.unwrap_or(DEFAULT_CHUNK_MB);
        if !(1..=MAX_CHUNK_MB).contains(&chunk_mb) {
            return Err(status_msg(ep, 400, "chunk_size out of range"));
        }
        let chunk = chunk_mb * MIB;
        let count = size.div_ceil(chunk).max(1);
        if count > MAX_PARTS {
            return Err(status_msg(ep, 400, "too many parts"));
        }
        let replaced = replaced_size(&st, req.space, parent, &req.name, req.overwrite, ep)?;
        check_quota(&st, replaced, size, ep)?;
        let id = st.next_id;
        st.next_id += 1;
        let count = count as u32;
        st.uploads.insert(
            id,
            Upload {
                space: req.space,
                parent,
                name: req.name.clone(),
                size,
                chunk,
                count,
                content_type: req.content_type.clone(),
                overwrite: req.overwrite,
                parts: BTreeMap::new(),
            },
        );
        Ok(Created {
            id,
            uid: Some(format!("uid-{id}")),
            chunk_size_mb: Some(chunk_mb),
            upload_urls: (1..=count)
                .map(|n| format!("mem://part/{id}/{n}"))
                .collect(),
        })
    }

    async fn upload_part(&self, url: &str, body: Bytes) -> ApiResult<String> {
        let ep = "PUT part";
        let (id, n) = parse_part_url(url).ok_or(ApiError::LinkRefused { status: 403 })?;
        let mut st = self.st();
        let up = st
            .uploads
            .get_mut(&id)
            .ok_or_else(|| status_msg(ep, 404, "upload not found"))?;
        if n == 0 || n > up.count {
            return Err(status_msg(ep, 404, "no such part"));
        }
        if body.len() as u64 > expected_part_size(up.size, up.chunk, n) {
            return Err(status_msg(ep, 400, "part larger than its slot"));
        }
        let etag = quoted_md5(&body);
        up.parts.insert(n, (body, etag.clone()));
        st.parts_stored += 1;
        Ok(etag)
    }

    async fn complete(&self, file_id: u64, parts: &[CompletedPart]) -> ApiResult<Completed> {
        let ep = "POST /files/{id}/complete";
        let mut st = self.st();
        let done = Completed {
            uid: Some(format!("uid-{file_id}")),
            download_url: None,
        };
        let Some(up) = st.uploads.get(&file_id) else {
            if st.completed.contains(&file_id) && st.nodes.contains_key(&file_id) {
                return Ok(done);
            }
            return Err(status_msg(ep, 404, "file not found"));
        };
        let content = check_claim(up, parts, ep)?;
        let (space, parent) = (up.space, up.parent);
        check_parent(&st, space, parent, ep)?;
        let replaced = replaced_size(&st, space, parent, &up.name, up.overwrite, ep)?;
        check_quota(&st, replaced, up.size, ep)?;
        let Some(up) = st.uploads.remove(&file_id) else {
            return Err(status_msg(ep, 404, "file not found"));
        };
        let old: Vec<u64> = same_name(&st, space, parent, &up.name)
            .map(|n| n.id)
            .collect();
        for id in old {
            st.nodes.remove(&id);
        }
        st.nodes.insert(
            file_id,
            Node {
                id: file_id,
                space,
                parent,
                name: up.name,
                dir: false,
                data: content.into(),
                content_type: up.content_type,
                modified: Some(mtime_of(file_id)),
                listed_size: None,
                link_reports_listed: false,
            },
        );
        st.completed.insert(file_id);
        st.completes += 1;
        Ok(done)
    }

    async fn delete(&self, file_id: u64) -> ApiResult<()> {
        if remove_tree(&mut self.st(), file_id) {
            Ok(())
        } else {
            Err(status_msg("DELETE /files/{id}", 404, "file not found"))
        }
    }

    async fn request_download(&self, target: &DownloadTarget) -> ApiResult<DownloadRequested> {
        match target {
            DownloadTarget::Files(ids) if ids.len() == 1 => {
                let link = self.link_for(ids[0])?;
                Ok(DownloadRequested {
                    url: Some(link.url),
                    download_id: None,
                    size: link.size,
                    name: link.name,
                    content_type: link.content_type,
                })
            }
            _ => Err(ApiError::InvalidRequest(
                "the in-memory double packages no zip (use the emulator)".into(),
            )),
        }
    }

    async fn download_status(&self, _download_id: u64) -> ApiResult<DownloadStatus> {
        Err(status_msg(
            "GET /files/download/{id}",
            404,
            "no download job",
        ))
    }

    async fn file_link(&self, file_id: u64) -> ApiResult<DownloadLink> {
        self.link_for(file_id)
    }

    async fn capacity(&self, machine_id: Option<u64>) -> ApiResult<Capacity> {
        let st = self.st();
        if let Some(cap) = st.capacity.get(&machine_id) {
            return Ok(*cap);
        }
        Ok(Capacity {
            total: st.quota,
            in_use: used(&st),
            team_total: None,
            team_in_use: None,
        })
    }

    async fn list_content(&self, _machine_id: u64, _path: &str) -> ApiResult<Vec<LiveEntry>> {
        Err(status_msg(
            "POST /machines/{id}/list-content",
            400,
            "no machine is running",
        ))
    }

    async fn get_range(&self, url: &str, range: Range<u64>) -> ApiResult<Bytes> {
        // Let other tasks run, as a real request would.
        tokio::task::yield_now().await;
        let (id, data) = self.linked(url)?;
        let len = data.len() as u64;
        if range.start >= len && range.end > range.start {
            return Err(status("GET link", 416));
        }
        if range.end > len || range.start > range.end {
            return Err(ApiError::Malformed {
                endpoint: "GET link".into(),
                detail: format!(
                    "short body: {} of {} bytes",
                    len.saturating_sub(range.start),
                    range.end.saturating_sub(range.start)
                ),
            });
        }
        let mut st = self.st();
        st.ranges.push((id, range.clone()));
        st.bytes_served += range.end - range.start;
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn get_stream(&self, url: &str, offset: u64) -> ApiResult<ByteStream> {
        let (_, data) = self.linked(url)?;
        let len = data.len() as u64;
        let bytes = self.get_range(url, offset.min(len)..len).await?;
        Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })))
    }
}
