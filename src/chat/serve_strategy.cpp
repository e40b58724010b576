#include "chat/serve_strategy.hpp"

#include <sys/wait.h>

#include <string>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "chat/local_member.hpp"
#include "core/base/logger.hpp"
#include "core/loop/net.hpp"

namespace mux {

void SingleServe::serve(Admitted client) {
  auto member =
      std::make_unique<LocalMember>(parts_.context, std::move(client.fd), std::move(client.ticket),
                                    parts_.room, parts_.owner, parts_.access, client.peer);
  LocalMember& joining = *member;
  parts_.keep(std::move(member));
  joining.start();  // joins once through the handshake and the token check
}

ForkServe::ForkServe(ServeParts parts, std::size_t max_children, std::function<void()> on_reaped)
    : parts_(std::move(parts)),
      fan_out_(parts_.context.loop),
      children_(parts_.context.loop, parts_.logger, max_children) {
  children_.on_reaped(std::move(on_reaped));
}

void ForkServe::serve(Admitted client) {
  SocketPair link;
  try {
    link = make_socket_pair();
  } catch (const std::system_error& error) {
    return refuse(std::move(client), error.what());
  }
  Fd parent_end = std::move(link.first);
  Fd child_end = std::move(link.second);
  SessionContext& context = parts_.context;
  pid_t pid = 0;
  try {
    pid = children_.spawn(
        {client.fd.get(), child_end.get()},
        [&] {
          // The TLS handshake happens here, in the child, never in the parent's loop.
          return serve_client_in_child(std::move(client.fd), std::move(child_end), context.max_line,
                                       context.max_queue, context.stream_factory, parts_.access);
        },
        [this](pid_t child, int status) {
          if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0)
            parts_.logger.info("client process {} ended: {}", child,
                               ChildSupervisor::describe_exit(status));
        });
  } catch (const std::system_error& error) {
    return refuse(std::move(client), error.what());
  }
  // The child says when its client is through the handshake and the token check: it joins then.
  parts_.keep(std::make_unique<ChildLink>(
      context, fan_out_, std::move(parent_end), pid, std::move(client.ticket), parts_.room,
      parts_.owner, fmt::format("{} (pid {})", client.peer, pid), &parts_.logger));
}

void ForkServe::refuse(Admitted client, const std::string& why) {
  parts_.logger.info("refused {}: {}", client.peer, why);
  auto member =
      std::make_unique<LocalMember>(parts_.context, std::move(client.fd), std::move(client.ticket),
                                    parts_.room, parts_.owner, parts_.access, client.peer);
  member->deliver(make_block(chat::notice::server_full()));
  member->close_after_output();
  parts_.keep(std::move(member));
}

}  // namespace mux
