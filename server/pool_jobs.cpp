#include "server/pool_jobs.hpp"

#include <sys/stat.h>

#include "common/digest.hpp"
#include "common/path_safety.hpp"

namespace ferry::server {

using protocol::errc;

void get_job::run() noexcept {
  if (!file) {
    auto fd = open_regular_beneath(root_fd, rel);
    if (!fd) {
      outcome.error = fd.error();
      return;
    }
    file = std::make_shared<unique_fd>(std::move(*fd));
    opened = true;
  }
  outcome = read_block(file->get(), offset, block, buffer.get(), false);
}

void get_job::done(job_host& host) {
  if (opened) host.remember_file(rel, file);
  host.accessed({.op = access_op::get,
                 .peer = peer,
                 .rel = rel,
                 .bytes = outcome.error == errc::ok ? outcome.length : 0,
                 .result = outcome.error});
  if (outcome.error != errc::ok) return host.send_error(peer, request_id, outcome.error);
  host.send_block(peer, request_id, offset, outcome, buffer.get());
}

void stat_job::done(job_host& host) {
  if (!info) {
    host.accessed({.op = access_op::stat, .peer = peer, .rel = rel, .result = info.error()});
    if (rel.empty()) host.root_refused(info.error());
    return host.send_error(peer, request_id, info.error());
  }
  host.finish_stat(peer, request_id, *info);
}

void list_job::run() noexcept { page = dirs->list_page(root_fd, rel, cursor, page_bytes); }

void list_job::done(job_host& host) {
  host.accessed({.op = access_op::list,
                 .peer = peer,
                 .rel = rel,
                 .entries = page ? page->entries.size() : 0,
                 .last = page && page->end,
                 .result = page ? errc::ok : page.error()});
  if (!page) {
    if (rel.empty()) host.root_refused(page.error());
    return host.send_error(peer, request_id, page.error());
  }
  host.send_reply(peer, request_id, *page);
}

void digest_job::run() noexcept {
  try {
    digest = digest_file(fd.get());
    struct stat st {};
    ok = ::fstat(fd.get(), &st) == 0 && version_of(st) == version;
  } catch (...) {
    ok = false;
  }
}

void digest_job::dropped(job_host& host) noexcept {
  try {
    host.digest_done(version, digest, false);
  } catch (...) {
  }
}

void job_pool::refuse_busy(const pool_job& job) noexcept {
  if (job.counts_as_digest) return;
  if (const auto op = job.logged_as())
    host_.accessed({.op = *op, .peer = job.peer, .rel = job.rel, .result = errc::busy});
  host_.send_error(job.peer, job.request_id, errc::busy);
}

bool job_pool::submit(std::unique_ptr<pool_job> job) noexcept {
  client_state* owner = job->has_client ? clients_.find(job->client) : nullptr;
  if (in_flight_ >= limits_.max_jobs ||
      (owner != nullptr && owner->jobs >= limits_.max_client_jobs)) {
    ++stats_.busy_sent;
    refuse_busy(*job);
    return false;
  }
  job->pool_ = this;
  job->req_.data = job.get();
  const int rc = uv_queue_work(
      loop_, &job->req_, [](uv_work_t* w) { static_cast<pool_job*>(w->data)->run(); },
      [](uv_work_t* w, int status) {
        std::unique_ptr<pool_job> j{static_cast<pool_job*>(w->data)};
        auto* pool = j->pool_;
        pool->finished(std::move(j), status);
      });
  if (rc != 0) {
    ++stats_.internal_errors;
    refuse_busy(*job);
    return false;
  }
  ++in_flight_;
  bytes_ += job->buffer_bytes;
  if (job->counts_as_digest) ++digests_;
  if (owner != nullptr) ++owner->jobs;
  (void)job.release();
  return true;
}

void job_pool::finished(std::unique_ptr<pool_job> j, int status) noexcept {
  --in_flight_;
  bytes_ -= j->buffer_bytes;
  if (j->counts_as_digest) --digests_;
  if (j->has_client && !stopping_) {
    if (auto* c = clients_.find(j->client); c != nullptr && c->jobs > 0) --c->jobs;
  }
  if (status != 0 || stopping_) return j->dropped(host_);
  try {
    j->done(host_);
  } catch (...) {
    ++stats_.internal_errors;
  }
  host_.job_finished();
}

}  // namespace ferry::server
