package dev.nbd.autoconfigure;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

import org.springframework.util.unit.DataSize;

import dev.nbd.backend.ExportBackend;
import dev.nbd.server.EventLoopIo;
import dev.nbd.server.ExportPolicy;

/**
 * The {@link ExportPolicy} of every {@code nbd.exports.<name>} entry, whether the export is made
 * from properties or is an {@link ExportBackend} bean: policy keys apply to both alike; storage
 * keys on a bean's name are refused, as are names that match nothing or two exports.
 */
final class ExportPolicies {

	private ExportPolicies() {
	}

	static Map<String, ExportPolicy> resolve(NbdExportProperties properties, List<ExportBackend> beans,
			int maxPayload) {
		Map<String, ExportBackend> beansByName = new LinkedHashMap<>();
		for (ExportBackend bean : beans) {
			ExportBackend other = beansByName.putIfAbsent(bean.name(), bean);
			if (other != null) {
				throw new NbdConfigurationException(
						"Two ExportBackend beans are named '" + bean.name() + "' (" + other.getClass().getName() + " and "
								+ bean.getClass().getName() + ").",
						"Give each ExportBackend bean a distinct name(): it is the export name clients ask for.");
			}
		}
		Map<String, ExportPolicy> policies = new LinkedHashMap<>();
		properties.getExports().forEach((name, export) -> {
			String prefix = "nbd.exports." + name + ".";
			ExportBackend bean = beansByName.get(name);
			if (export.getType() != null && bean != null) {
				throw new NbdConfigurationException(
						prefix + "type is set, which makes an export named '" + name + "', but an ExportBackend bean ("
								+ bean.getClass().getName() + ") is also named '" + name + "'.",
						"To set options of the bean's export, remove " + prefix + "type (and size, path, event-loop-io);"
								+ " to serve both, rename one of them.");
			}
			if (export.getType() == null) {
				if (bean == null) {
					throw new NbdConfigurationException("nbd.exports." + name + " sets options of an export named '"
							+ name + "', but it has no type and no ExportBackend bean is named '" + name
							+ "' (beans: " + beansByName.keySet() + ").",
							"Set " + prefix + "type (memory or file) to make the export from properties, or define an"
									+ " ExportBackend bean whose name() is '" + name + "', or fix the name.");
				}
				List<String> storageKeys = new ArrayList<>();
				if (export.getSize() != null) {
					storageKeys.add("size");
				}
				if (export.getPath() != null) {
					storageKeys.add("path");
				}
				if (export.getEventLoopIo() != null) {
					storageKeys.add("event-loop-io");
				}
				if (!storageKeys.isEmpty()) {
					String keys = storageKeys.stream().map(k -> prefix + k).collect(Collectors.joining(", "));
					throw new NbdConfigurationException(keys + " cannot apply to export '" + name
							+ "': it is an ExportBackend bean (" + bean.getClass().getName()
							+ "), which decides its own storage. Only exports made from properties (with a type)"
							+ " take type, size, path and event-loop-io.",
							"Remove " + keys + ". Policy keys (read-only, description, minimum-block-size,"
									+ " preferred-block-size, multi-conn, allowed-addresses) do apply to the bean.");
				}
			}
			policies.put(name, policy(prefix, export, maxPayload));
		});
		return policies;
	}

	private static ExportPolicy policy(String prefix, NbdExportProperties.Export export, int maxPayload) {
		int minimum = blockSize(prefix + "minimum-block-size", export.getMinimumBlockSize());
		int preferred = blockSize(prefix + "preferred-block-size", export.getPreferredBlockSize());
		if (minimum != 0) {
			check(prefix + "minimum-block-size", export.getMinimumBlockSize(),
					() -> ExportPolicy.checkMinimumBlockSize(minimum));
		}
		if (preferred != 0) {
			check(prefix + "preferred-block-size", export.getPreferredBlockSize(),
					() -> ExportPolicy.checkPreferredBlockSize(preferred, Math.max(minimum, 1)));
			if (preferred > maxPayload) {
				throw new NbdConfigurationException(
						prefix + "preferred-block-size is " + export.getPreferredBlockSize()
								+ ", larger than nbd.server.max-payload (" + DataSize.ofBytes(maxPayload) + ").",
						"Lower " + prefix + "preferred-block-size, or raise nbd.server.max-payload.");
			}
		}
		return ExportPolicy.builder()
			.readOnly(export.isReadOnly())
			.description(export.getDescription())
			.minimumBlockSize(minimum)
			.preferredBlockSize(preferred)
			.multiConn(export.getMultiConn())
			.allowedAddresses(NbdServerConfigValidation.cidrs(prefix + "allowed-addresses", export.getAllowedAddresses()))
			.eventLoopIo((export.getEventLoopIo() == null) ? EventLoopIo.ADAPTIVE
					: export.getEventLoopIo() ? EventLoopIo.ALWAYS : EventLoopIo.NEVER)
			.build();
	}

	private static int blockSize(String property, DataSize size) {
		if (size == null) {
			return 0;
		}
		long bytes = size.toBytes();
		if (bytes < 1 || bytes > Integer.MAX_VALUE) {
			throw new NbdConfigurationException(property + " is " + size + ", which is not a block size.",
					"Set " + property + " to a power of two such as 512B or 4KB, or remove it.");
		}
		return (int) bytes;
	}

	private static void check(String property, DataSize value, Runnable check) {
		try {
			check.run();
		}
		catch (IllegalArgumentException ex) {
			throw new NbdConfigurationException(property + " is " + value + ": the " + ex.getMessage() + ".",
					"Set " + property + " to a valid value (512B, 4KB and 64KB are typical), or remove it.", ex);
		}
	}

}
