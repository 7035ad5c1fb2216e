package dev.nbd.testsupport;

import java.util.ArrayList;
import java.util.List;

import io.netty.buffer.PooledByteBufAllocator;
import io.netty.util.ResourceLeakDetector;
import io.netty.util.ResourceLeakDetectorFactory;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Fails a test class during which Netty reported a leaked buffer (tests run with
 * {@code io.netty.leakDetection.level=paranoid}, see the root pom), instead of leaving a
 * {@code LEAK:} line in a log nobody reads. Registered for every test class by
 * {@code META-INF/services} and extension auto-detection ({@code junit-platform.properties}).
 * Netty reports a leak when it next tracks an allocation after the garbage collector found the
 * buffer, so each class ends with a collection and an allocation.
 */
public final class NettyLeakCheck implements BeforeAllCallback, AfterAllCallback {

	private static final List<String> leaks = new ArrayList<>();

	static {
		// Before the first buffer class creates its detector: every detector reports here too.
		ResourceLeakDetectorFactory netty = ResourceLeakDetectorFactory.instance();
		ResourceLeakDetectorFactory.setResourceLeakDetectorFactory(new ResourceLeakDetectorFactory() {

			@Override
			@SuppressWarnings("deprecation")
			public <T> ResourceLeakDetector<T> newResourceLeakDetector(Class<T> resource, int samplingInterval,
					long maxActive) {
				return listening(netty.newResourceLeakDetector(resource, samplingInterval, maxActive));
			}

			@Override
			public <T> ResourceLeakDetector<T> newResourceLeakDetector(Class<T> resource, int samplingInterval) {
				return listening(netty.newResourceLeakDetector(resource, samplingInterval));
			}

		});
	}

	private static <T> ResourceLeakDetector<T> listening(ResourceLeakDetector<T> detector) {
		detector.setLeakListener((type, records) -> {
			synchronized (leaks) {
				leaks.add(type + ":\n" + records);
			}
		});
		return detector;
	}

	@Override
	public void beforeAll(ExtensionContext context) {
		// Loading this class installed the factory.
	}

	@Override
	public void afterAll(ExtensionContext context) {
		for (int i = 0; i < 2; i++) {
			System.gc();
			Thread.yield();
			PooledByteBufAllocator.DEFAULT.directBuffer(1).release();
		}
		List<String> found;
		synchronized (leaks) {
			found = List.copyOf(leaks);
			leaks.clear();
		}
		if (!found.isEmpty()) {
			throw new AssertionError("Netty reported " + found.size() + " leaked buffer(s) during "
					+ context.getDisplayName() + ":\n" + String.join("\n", found));
		}
	}

}
