package dev.nbd.testsupport;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

import dev.nbd.backend.ExportBackend;
import dev.nbd.server.Cidr;
import dev.nbd.server.ExportPolicy;
import dev.nbd.server.MultiConnMode;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerConfig;
import dev.nbd.server.NbdServerListener;

/**
 * Servers for one test, on an ephemeral port, stopped after it whatever happens (then what was
 * handed to {@link #closeAfter} is closed); refusals and opened connections recorded by
 * {@link #listener()}. Register as a field:
 * <pre>
 * &#64;RegisterExtension
 * final NbdServerExtension servers = new NbdServerExtension();
 * ...
 * int port = this.servers.start(NbdServerConfig.builder().maxPayload(64 * 1024), new MemoryBackend("mem", SIZE)).port();
 * </pre>
 * With {@link GatedBackend}s the test holds requests inside the backend until it opens the gate.
 * A test that needs its own {@link NbdServerListener} as well registers
 * {@link #alsoReportingTo(NbdServerListener)}.
 */
public final class NbdServerExtension implements AfterEachCallback {

	private final RecordingListener listener = new RecordingListener();

	/** What the servers report to: {@link #listener} and, if given, the test's own listener after it. */
	private final NbdServerListener reportTo;

	private final List<NbdServer> servers = Collections.synchronizedList(new ArrayList<>());

	private final List<AutoCloseable> closeables = Collections.synchronizedList(new ArrayList<>());

	public NbdServerExtension() {
		this.reportTo = this.listener;
	}

	private NbdServerExtension(NbdServerListener also) {
		this.reportTo = both(this.listener, also);
	}

	/**
	 * Servers whose events also go to {@code also} (metrics, or a listener that fails on purpose),
	 * after {@link #listener()} has recorded them; what {@code also} throws reaches the server.
	 */
	public static NbdServerExtension alsoReportingTo(NbdServerListener also) {
		return new NbdServerExtension(also);
	}

	/** Every method of the interface, present and future, to {@code first} then {@code second}. */
	private static NbdServerListener both(NbdServerListener first, NbdServerListener second) {
		return (NbdServerListener) Proxy.newProxyInstance(NbdServerListener.class.getClassLoader(),
				new Class<?>[] { NbdServerListener.class }, (proxy, method, args) -> {
					if (method.getDeclaringClass() == Object.class) {
						return switch (method.getName()) {
							case "equals" -> proxy == args[0];
							case "hashCode" -> System.identityHashCode(proxy);
							default -> "listeners " + first + " and " + second;
						};
					}
					try {
						method.invoke(first, args);
						return method.invoke(second, args);
					}
					catch (InvocationTargetException ex) {
						throw ex.getCause();
					}
				});
	}

	/** Starts a server with default settings serving {@code backends}. */
	public NbdServer start(ExportBackend... backends) {
		return start(NbdServerConfig.builder(), backends);
	}

	/** Starts a server with {@code config} (its port replaced by an ephemeral one) serving {@code backends}. */
	public NbdServer start(NbdServerConfig.Builder config, ExportBackend... backends) {
		return start(config, List.of(backends), Map.of(), Map.of());
	}

	public NbdServer start(NbdServerConfig.Builder config, List<ExportBackend> backends) {
		return start(config, backends, Map.of(), Map.of());
	}

	/** The same, with multi-conn modes and per-export allow-lists. */
	public NbdServer start(NbdServerConfig.Builder config, List<ExportBackend> backends,
			Map<String, MultiConnMode> modes, Map<String, List<Cidr>> exportAllowLists) {
		NbdServer server = new NbdServer(config.port(0).build(), backends, modes, exportAllowLists, this.reportTo);
		this.servers.add(server);
		server.start();
		return server;
	}

	/** The same, with an {@link ExportPolicy} per export name (others get the default policy). */
	public NbdServer startWithPolicies(NbdServerConfig.Builder config, List<ExportBackend> backends,
			Map<String, ExportPolicy> policies) {
		NbdServer server = new NbdServer(config.port(0).build(), backends, policies, this.reportTo);
		this.servers.add(server);
		server.start();
		return server;
	}

	/** {@code closeable} (a file backend), closed after the test once the servers have stopped. */
	public <T extends AutoCloseable> T closeAfter(T closeable) {
		this.closeables.add(closeable);
		return closeable;
	}

	/** The server started last. */
	public NbdServer server() {
		synchronized (this.servers) {
			if (this.servers.isEmpty()) {
				throw new IllegalStateException("no server started");
			}
			return this.servers.get(this.servers.size() - 1);
		}
	}

	/** The port of the server started last. */
	public int port() {
		return server().port();
	}

	/** What every server of this test reported: refusals and opened connections. */
	public RecordingListener listener() {
		return this.listener;
	}

	/** Stops the servers started so far (the test may start others after). */
	public void stopAll() {
		List<NbdServer> started;
		synchronized (this.servers) {
			started = new ArrayList<>(this.servers);
			this.servers.clear();
		}
		Collections.reverse(started);
		for (NbdServer server : started) {
			server.stop();
		}
	}

	@Override
	public void afterEach(ExtensionContext context) throws Exception {
		stopAll();
		List<AutoCloseable> toClose;
		synchronized (this.closeables) {
			toClose = new ArrayList<>(this.closeables);
			this.closeables.clear();
		}
		for (AutoCloseable closeable : toClose) {
			closeable.close();
		}
	}

}
