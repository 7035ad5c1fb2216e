package dev.nbd.testsupport;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

import dev.nbd.backend.ExportBackend;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerConfig;

/**
 * Starts NBD servers on a free port for a test and, after it, stops them and closes what was
 * handed over to close (file backends). Use with {@code @RegisterExtension}.
 */
public final class ServerFixture implements AfterEachCallback {

	private final List<NbdServer> servers = new ArrayList<>();

	private final List<AutoCloseable> closeables = new ArrayList<>();

	/** A started server with default settings serving {@code backends}. */
	public NbdServer start(ExportBackend... backends) {
		NbdServer server = new NbdServer(NbdServerConfig.builder().port(0).build(), List.of(backends), Map.of(),
				Map.of(), null);
		this.servers.add(server);
		server.start();
		return server;
	}

	/** {@code closeable}, closed after the test (once the servers have stopped). */
	public <T extends AutoCloseable> T closeAfter(T closeable) {
		this.closeables.add(closeable);
		return closeable;
	}

	@Override
	public void afterEach(ExtensionContext context) throws Exception {
		this.servers.forEach(NbdServer::stop);
		this.servers.clear();
		for (AutoCloseable c : this.closeables) {
			c.close();
		}
		this.closeables.clear();
	}

}
