#include "chat/client_session.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "core/base/units.hpp"

namespace mux {

ClientSession::ClientSession(SessionContext& context, Fd socket, Listener& listener)
    : context_(context),
      listener_(listener),
      framer_(context.max_line),
      connection_(context, std::move(socket), *this),
      pause_(context.loop, [this] { update_reading(); }) {
  connection_.set_high_water_mark(context.max_queue);
}

ClientSession::~ClientSession() {
  context_.loop.cancel_timer(quiet_timer_);
}

void ClientSession::on_data(std::string_view bytes) {
  framer_.feed(bytes, [this](std::string_view line, bool cut) { deliver_line(line, cut); });
  listener_.on_input_done();
  if (!reading_lines_) return;
  // Input that stops mid-line (pending, or the dropped tail of an overlong line) ends after the
  // quiet time; a line split across writes a few ms apart keeps resetting that timer, but not
  // past the line's age limit.
  bool mid_line = bytes.back() != '\n';
  if (!mid_line || bytes.find('\n') != std::string_view::npos) partial_since_ = {};
  rearm_quiet_timer(mid_line);
}

void ClientSession::on_end_of_input() {
  // "bye" without a newline, then close: still delivered.
  framer_.flush_partial([this](std::string_view line, bool cut) { deliver_line(line, cut); });
  listener_.on_input_done();
  if (!reading_lines_) return;  // the last line was /quit: already leaving
  // Answers to its last lines may still be on their way (in fork mode through the parent):
  // the connection keeps writing until the listener calls finish().
  reading_lines_ = false;
  context_.loop.cancel_timer(std::exchange(quiet_timer_, 0));
  leave("closed by client", false);
}

void ClientSession::on_closed(std::string_view reason) {
  context_.loop.cancel_timer(std::exchange(quiet_timer_, 0));
  pause_.cancel();
  reading_lines_ = false;
  if (!left_) {
    // Already inside a deferred callback: no need to defer again.
    left_ = true;
    listener_.on_leave(reason.empty() ? std::string_view("closed") : reason, false);
  }
  listener_.on_closed();
}

void ClientSession::on_high_water(std::size_t queued) {
  leave(fmt::format("too slow: {} unsent", format_bytes(queued)), true);
  connection_.close_now("too slow");
}

void ClientSession::deliver_line(std::string_view raw, bool cut) {
  if (!reading_lines_) return;  // lines after /quit are not read
  std::string& sanitized = context_.sanitized;
  sanitized.clear();
  chat::append_sanitized(sanitized, raw, cut);
  listener_.on_line(sanitized, cut);
}

void ClientSession::rearm_quiet_timer(bool mid_line) {
  context_.loop.cancel_timer(std::exchange(quiet_timer_, 0));
  if (!mid_line) return;
  auto now = EventLoop::Clock::now();
  if (partial_since_ == EventLoop::Clock::time_point{}) partial_since_ = now;
  auto age_left = std::chrono::ceil<std::chrono::milliseconds>(partial_since_ +
                                                               SessionContext::kLineTime - now);
  auto delay = std::clamp(age_left, std::chrono::milliseconds{0}, SessionContext::kQuietTime);
  quiet_timer_ = context_.loop.add_timer(delay, [this] {
    quiet_timer_ = 0;
    flush_quiet_line();
  });
}

void ClientSession::flush_quiet_line() {
  if (!reading_lines_) return;
  if (reading_paused()) {
    quiet_flush_due_ = true;
    return;
  }
  partial_since_ = {};
  framer_.flush_partial([this](std::string_view line, bool cut) { deliver_line(line, cut); });
  listener_.on_input_done();
}

void ClientSession::pause_reading_for(std::chrono::milliseconds pause) {
  if (!reading_lines_) return;
  if (pause_.extend(pause)) update_reading();
}

void ClientSession::hold_reading() {
  held_ = true;
  update_reading();
}

void ClientSession::release_reading() {
  held_ = false;
  update_reading();
}

void ClientSession::update_reading() {
  if (!reading_lines_) return;
  if (reading_paused()) return connection_.pause_reading();
  connection_.resume_reading();
  // The quiet time passed while the client was not read: judge it again from now.
  if (std::exchange(quiet_flush_due_, false)) {
    partial_since_ = {};
    rearm_quiet_timer(framer_.has_partial());
  }
}

void ClientSession::send(const Block& block) {
  connection_.send(block);
}

void ClientSession::finish(std::string_view reason) {
  if (connection_.closing()) return;
  reading_lines_ = false;
  context_.loop.cancel_timer(std::exchange(quiet_timer_, 0));
  leave(std::string(reason), false);
  connection_.close_gracefully();
}

void ClientSession::leave(std::string reason, bool too_slow) {
  if (left_) return;
  left_ = true;
  // Deferred: this may run inside the room's walk over its members (a send found us too slow).
  context_.loop.defer(
      [this, reason = std::move(reason), too_slow] { listener_.on_leave(reason, too_slow); });
}

}  // namespace mux
