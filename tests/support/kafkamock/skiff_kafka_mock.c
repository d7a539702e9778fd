/* skiff-kafka-mock: librdkafka's mock cluster as a process, for tests.
 *
 *   skiff-kafka-mock [--brokers N]
 *
 * Starts a mock Kafka cluster of N brokers (default 3) on loopback, prints
 * its bootstrap servers as the first line of stdout and runs until SIGTERM
 * or SIGINT. Topics are created on demand (auto-creation on metadata and
 * produce requests). Fault injection, for outage tests:
 *   SIGUSR1      every broker down (connections dropped and refused);
 *                "brokers down" on stdout once done
 *   SIGUSR2      every broker up again ("brokers up")
 * and the same as lines on stdin: "down [id]", "up [id]",
 * "topic NAME PARTITIONS" (create with that many partitions). Each command
 * read from stdin is answered with "ok" or "error: ..." on stdout.
 *
 * The mock cluster lives inside this process: it ends with it. */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop, want_down, want_up;

static void on_signal(int sig) {
  if (sig == SIGUSR1) want_down = 1;
  else if (sig == SIGUSR2) want_up = 1;
  else stop = 1;
}

static void command(rd_kafka_mock_cluster_t *mc, char *line) {
  char *save = NULL;
  char *verb = strtok_r(line, " \t\r\n", &save);
  char *a1 = strtok_r(NULL, " \t\r\n", &save);
  char *a2 = strtok_r(NULL, " \t\r\n", &save);
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (!verb) return;
  if (!strcmp(verb, "down")) err = rd_kafka_mock_broker_set_down(mc, a1 ? atoi(a1) : -1);
  else if (!strcmp(verb, "up")) err = rd_kafka_mock_broker_set_up(mc, a1 ? atoi(a1) : -1);
  else if (!strcmp(verb, "topic") && a1 && a2) err = rd_kafka_mock_topic_create(mc, a1, atoi(a2), 1);
  else {
    printf("error: unknown command '%s' (down [id] | up [id] | topic NAME PARTITIONS)\n", verb);
    fflush(stdout);
    return;
  }
  if (err) printf("error: %s\n", rd_kafka_err2str(err));
  else printf("ok\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  int nbrokers = 3;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--brokers") && i + 1 < argc) nbrokers = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--brokers N]\n", argv[0]);
      return 2;
    }
  }
  if (nbrokers < 1 || nbrokers > 16) {
    fprintf(stderr, "skiff-kafka-mock: --brokers must be 1..16\n");
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) {
    fprintf(stderr, "skiff-kafka-mock: %s\n", err);
    return 1;
  }
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, nbrokers);
  if (!mc) {
    fprintf(stderr, "skiff-kafka-mock: cannot create the mock cluster\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
  fflush(stdout);

  char line[512];
  size_t have = 0;
  int stdin_open = 1;
  while (!stop) {
    if (want_down) {
      want_down = 0;
      rd_kafka_mock_broker_set_down(mc, -1);
      printf("brokers down\n");
      fflush(stdout);
    }
    if (want_up) {
      want_up = 0;
      rd_kafka_mock_broker_set_up(mc, -1);
      printf("brokers up\n");
      fflush(stdout);
    }
    struct pollfd p = {.fd = 0, .events = POLLIN};
    int n = poll(&p, stdin_open ? 1 : 0, 100);
    if (n > 0 && (p.revents & (POLLIN | POLLHUP))) {
      ssize_t r = read(0, line + have, sizeof line - 1 - have);
      if (r <= 0) {
        if (r < 0 && errno == EINTR) continue;
        stdin_open = 0;
        continue;
      }
      have += (size_t)r;
      line[have] = 0;
      char *nl;
      while ((nl = strchr(line, '\n'))) {
        *nl = 0;
        command(mc, line);
        size_t used = (size_t)(nl + 1 - line);
        memmove(line, nl + 1, have - used + 1);
        have -= used;
      }
      if (have == sizeof line - 1) have = 0; /* an overlong line: dropped */
    }
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
