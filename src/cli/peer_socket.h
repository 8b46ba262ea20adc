// Whether an HTTP client is still there while its request runs: the connection's socket found by
// its addresses, then polled for the peer's end of the stream.
#pragma once

#include <string>

namespace unmask {

// The descriptor of this process's TCP socket connected from remote_addr:remote_port to
// local_port (an accepted connection), or -1 when there is none. Linux: /proc/self/fd.
int find_connection_socket(int local_port, const std::string& remote_addr, int remote_port);

// Whether the peer of a connected socket has closed or reset it (POLLRDHUP, POLLHUP, POLLERR).
// Data the peer sent (a pipelined request) is left unread.
bool peer_closed(int fd);

}  // namespace unmask
