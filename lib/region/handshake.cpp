#include "region/handshake.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "region/layout.hpp"

namespace synchmess::region::handshake {
namespace {

using core::make_error;

std::errc last_error() noexcept {
  return static_cast<std::errc>(errno);
}

// sockaddr_un for the abstract `name`, and its length (the name is not NUL-terminated).
core::Result<socklen_t> abstract_address(std::string_view name, sockaddr_un& address) noexcept {
  if (name.empty() || name.size() > SYNCH_FASTPATH_SOCKET_MAX ||
      name.size() + 1 > sizeof address.sun_path) {
    return make_error(std::errc::invalid_argument);
  }
  std::memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

}  // namespace

core::Result<int> connect_to(std::string_view name) noexcept {
  sockaddr_un address;
  auto length = abstract_address(name, address);
  if (!length) return make_error(length.error());
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(last_error());
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), length.value());
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const std::errc error = last_error();
    ::close(fd);
    return make_error(error);
  }
  return fd;
}

core::Result<int> listen_on(std::string_view name, int backlog) noexcept {
  sockaddr_un address;
  auto length = abstract_address(name, address);
  if (!length) return make_error(length.error());
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return make_error(last_error());
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), length.value()) != 0 ||
      ::listen(fd, backlog) != 0) {
    const std::errc error = last_error();
    ::close(fd);
    return make_error(error);
  }
  return fd;
}

core::Status send_grant(int socket, const Grant& grant, int memfd, int eventfd) noexcept {
  const int fds[2] = {memfd, eventfd};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
  iovec data{const_cast<Grant*>(&grant), sizeof grant};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof fds);
  std::memcpy(CMSG_DATA(header), fds, sizeof fds);
  // MSG_DONTWAIT: a server thread never waits on a client (a fresh connection's buffer takes
  // one grant); MSG_NOSIGNAL: a client that went is an error, not a SIGPIPE.
  const ssize_t sent = ::sendmsg(socket, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent < 0) return make_error(last_error());
  if (static_cast<size_t>(sent) != sizeof grant) return make_error(std::errc::protocol_error);
  return {};
}

core::Result<Received> receive_grant(int socket) noexcept {
  Grant grant{};
  // Room for more descriptors than a grant carries, so that extra ones arrive (and are
  // closed) instead of being cut off silently.
  alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))] = {};
  char extra;  // a longer datagram does not fit: MSG_TRUNC
  iovec data[2] = {{&grant, sizeof grant}, {&extra, 1}};
  msghdr message{};
  message.msg_iov = data;
  message.msg_iovlen = 2;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t received;
  do {
    received = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  if (received < 0) return make_error(last_error());

  int fds[8];
  unsigned count = 0;
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    const size_t bytes = header->cmsg_len - CMSG_LEN(0);
    for (size_t i = 0; i < bytes / sizeof(int) && count < 8; ++i) {
      std::memcpy(&fds[count++], CMSG_DATA(header) + i * sizeof(int), sizeof(int));
    }
  }
  const auto close_all = [&] {
    for (unsigned i = 0; i < count; ++i)
      ::close(fds[i]);
  };
  if (received == 0) {
    close_all();
    return make_error(std::errc::connection_reset);  // refused: the server closed it
  }
  if (static_cast<size_t>(received) != sizeof grant || count != 2 ||
      (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || grant.magic != kGrantMagic ||
      grant.version != kLayoutVersion || grant.slot == kServerSlot || grant.slot >= kMaxClients) {
    close_all();
    return make_error(std::errc::protocol_error);
  }
  return Received{grant, fds[0], fds[1]};
}

}  // namespace synchmess::region::handshake
