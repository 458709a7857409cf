/* kafka_mode.h - `flowd kafka`: run only the embedded Kafka cluster (librdkafka's mock), for
 * several flowd nodes and connectors to share, with a line-based fault-injection console. */
#ifndef FLOWD_KAFKA_MODE_H
#define FLOWD_KAFKA_MODE_H

/* argv[0] is "kafka". Returns the process exit code. */
int kafka_mode_main(int argc, char **argv);

#endif
