package dev.nbd.testsupport;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import org.awaitility.Awaitility;
import org.awaitility.core.ConditionTimeoutException;

import dev.nbd.server.NbdConnection;
import dev.nbd.server.NbdServerListener;

/** Remembers refusals and opened connections, for assertions. */
public final class RecordingListener implements NbdServerListener {

	private final List<String> refusals = new CopyOnWriteArrayList<>();

	private final List<NbdConnection> opened = new CopyOnWriteArrayList<>();

	@Override
	public void connectionRefused(String reason) {
		this.refusals.add(reason);
	}

	@Override
	public void connectionOpened(NbdConnection connection) {
		this.opened.add(connection);
	}

	public List<String> refusals() {
		return this.refusals;
	}

	public long refusals(String reason) {
		return this.refusals.stream().filter(reason::equals).count();
	}

	public List<NbdConnection> opened() {
		return this.opened;
	}

	/** Waits up to {@code timeout} for at least {@code count} refusals with {@code reason}. */
	public boolean awaitRefusals(String reason, long count, Duration timeout) {
		try {
			Awaitility.await().atMost(timeout).pollInterval(Duration.ofMillis(10)).until(() -> refusals(reason) >= count);
			return true;
		}
		catch (ConditionTimeoutException ex) {
			return false;
		}
	}

}
