package dev.nbd.autoconfigure;

import java.util.List;
import java.util.Map;

import org.springframework.boot.health.contributor.AbstractHealthIndicator;
import org.springframework.boot.health.contributor.Health;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.server.Export;
import dev.nbd.server.MemoryBudget;
import dev.nbd.server.NbdServer;

/**
 * UP while the NBD listener is bound, OUT_OF_SERVICE while it drains at shutdown, DOWN
 * otherwise, and DOWN while an export's sync has failed (its FLUSH and FUA requests fail until
 * the server is restarted; listed under {@code syncFailed}). Details tell the memory budget's
 * use and which memory exports are full. Meant for the readiness group: a pod
 * that cannot serve NBD must get no clients.
 */
public class NbdHealthIndicator extends AbstractHealthIndicator {

	private final NbdServer server;

	public NbdHealthIndicator(NbdServer server) {
		super("NBD health check failed");
		this.server = server;
	}

	@Override
	protected void doHealthCheck(Health.Builder builder) {
		List<String> syncFailed = this.server.exports().stream().filter(Export::syncFailed).map(Export::name).toList();
		if (!syncFailed.isEmpty()) {
			builder.down().withDetail("syncFailed", syncFailed);
		}
		else if (this.server.isRunning() && !this.server.isDraining()) {
			builder.up();
		}
		else if (this.server.isDraining()) {
			builder.outOfService();
		}
		else {
			builder.down();
		}
		builder.withDetail("port", this.server.port())
			.withDetail("exports", this.server.exports().size())
			.withDetail("connections", this.server.connections().size());
		if (this.server.unixSocket() != null) {
			builder.withDetail("unixSocket", this.server.unixSocket().toString());
		}
		if (this.server.transport() != null) {
			builder.withDetail("transport", this.server.transport().name().toLowerCase());
		}
		// Details, not a status: one full memory export or a spent budget must not take the
		// whole server out of its readiness group.
		MemoryBudget budget = this.server.memoryBudget();
		builder.withDetail("memoryBudget", Map.of("used", budget.held(), "limit", budget.limit(), "pausedConnections",
				budget.pausedConnections()));
		List<String> full = this.server.exports()
			.stream()
			.filter((e) -> e.backend() instanceof MemoryBackend m && m.isFull())
			.map(Export::name)
			.toList();
		if (!full.isEmpty()) {
			builder.withDetail("fullMemoryExports", full);
		}
	}

}
