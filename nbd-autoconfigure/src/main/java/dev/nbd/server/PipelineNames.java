package dev.nbd.server;

/** Names of the handlers in a connection's pipeline. */
final class PipelineNames {

	static final String FLUSH = "flush";

	static final String TLS = "tls";

	static final String IDLE = "idle";

	static final String HANDSHAKE_DECODER = "handshakeDecoder";

	static final String HANDSHAKE = "handshake";

	static final String MEMORY = "memory";

	static final String REQUEST_DECODER = "requestDecoder";

	static final String TRANSMISSION = "transmission";

	private PipelineNames() {
	}

}
