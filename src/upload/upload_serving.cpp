#include "upload/upload_serving.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/base/logger.hpp"
#include "upload/upload_protocol.hpp"
#include "upload/upload_store.hpp"

namespace mux {

std::chrono::milliseconds partial_sweep_interval(std::chrono::seconds keep_partial) {
  std::chrono::milliseconds quarter = keep_partial / 4;
  return std::clamp<std::chrono::milliseconds>(quarter, std::chrono::seconds{1},
                                               std::chrono::minutes{10});
}

void sweep_expired_partials(EventLoop& loop, const OutputDirectory& directory, Logger& logger) {
  // One readdir of --output-dir per interval: nothing next to the uploads themselves.
  loop.add_periodic(partial_sweep_interval(directory.keep_partial()), [&directory, &logger] {
    std::size_t expired = directory.remove_expired_resumables();
    if (expired != 0) {
      logger.info("removed {} partial upload(s) older than --keep-partial from {}", expired,
                  directory.path());
    }
  });
}

std::chrono::milliseconds pre_header_shed_after(std::chrono::milliseconds header_timeout) {
  if (header_timeout.count() > 0 && header_timeout / 2 < kShedAfter) return header_timeout / 2;
  return kShedAfter;
}

AdmissionPolicy upload_admission_policy(const UploadAdmission& admission,
                                        std::function<bool()> has_room) {
  AdmissionPolicy policy = AdmissionPolicy::wait_for_room(std::move(has_room));
  policy.max_per_address = static_cast<std::size_t>(admission.max_per_address);
  // Connections without a complete header have no budget of their own below the cap; at it
  // (has_room says no) the oldest that waited shed_after is shed for a newcomer, and an address
  // holding a few such already is refused: a socket that sends a byte and reconnects can no
  // longer keep every slot (issue 21, E3).
  policy.shed_at_owner_cap = true;
  policy.max_unauthenticated = std::numeric_limits<std::size_t>::max();
  policy.max_unauthenticated_per_address =
      admission.max_per_address == 0
          ? 0
          : static_cast<std::size_t>(std::max<std::uint64_t>(2, admission.max_per_address / 8));
  policy.shed_after = admission.shed_after;
  // Nothing authenticates here: what is shed is a connection still sending its header.
  policy.pending_kind = "connection without a complete header";
  policy.allowed = admission.allowed;
  policy.refusal_stream = admission.refusal_stream;
  policy.refusal_message = [](Refusal refusal) {
    switch (refusal) {
      case Refusal::too_many_from_address:
        return format_err_reply("server busy: too many connections from your address");
      case Refusal::not_allowed:
        return format_err_reply("refused: address not allowed");
      case Refusal::server_full:
        break;
    }
    return format_err_reply("server busy: too many uploads at once");
  };
  return policy;
}

}  // namespace mux
