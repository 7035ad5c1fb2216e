package dev.nbd.testkit;

import java.time.Duration;
import java.util.List;
import java.util.Map;

import dev.nbd.backend.ExportBackend;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerConfig;

/** A backend served by the real {@link NbdServer} on a free loopback port. */
final class ServedBackend implements AutoCloseable {

	private final NbdServer server;

	private final String name;

	private ServedBackend(NbdServer server, String name) {
		this.server = server;
		this.name = name;
	}

	static ServedBackend serve(ExportBackend backend) {
		NbdServerConfig config = NbdServerConfig.builder().address("127.0.0.1").port(0).build();
		NbdServer server = new NbdServer(config, List.of(backend), Map.of(), Map.of(), null);
		server.start();
		return new ServedBackend(server, backend.name());
	}

	/** {@code nbd://127.0.0.1:PORT/NAME}, the name percent-encoded. */
	String uri() {
		StringBuilder path = new StringBuilder();
		for (byte b : this.name.getBytes(java.nio.charset.StandardCharsets.UTF_8)) {
			int c = b & 0xff;
			if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || "-._~".indexOf(c) >= 0) {
				path.append((char) c);
			}
			else {
				path.append('%').append(String.format("%02X", c));
			}
		}
		return "nbd://127.0.0.1:" + this.server.port() + "/" + path;
	}

	@Override
	public void close() {
		// graceful: in-flight requests finish and the export is flushed, as in an application
		this.server.shutdownGracefully(Duration.ofSeconds(10));
	}

}
