package daemon

import (
	"bytes"
	"fmt"
	"os"
	"text/template"
)

// Paths are the private locations of one test daemon, all under Dir.
type Paths struct {
	Dir      string
	Root     string
	State    string
	Address  string // containerd's gRPC socket (CRI is served there too)
	TTRPC    string
	Debug    string
	RuncRoot string
	CNIBin   string
	CNIConf  string
	Opt      string
	Config   string
	Log      string
	// NRIPlugins and NRIConf are NRI's plugin and plugin config dirs,
	// used when NRI is enabled (Options.NRISocket).
	NRIPlugins string
	NRIConf    string
}

func newPaths(dir string) Paths {
	return Paths{
		Dir:        dir,
		Root:       dir + "/root",
		State:      dir + "/state",
		Address:    dir + "/containerd.sock",
		TTRPC:      dir + "/containerd.sock.ttrpc",
		Debug:      dir + "/debug.sock",
		RuncRoot:   dir + "/runc",
		CNIBin:     dir + "/cni/bin",
		CNIConf:    dir + "/cni/conf",
		Opt:        dir + "/opt",
		Config:     dir + "/config.toml",
		Log:        dir + "/containerd.log",
		NRIPlugins: dir + "/nri/plugins",
		NRIConf:    dir + "/nri/conf",
	}
}

type configData struct {
	Paths
	Options
}

// RegistryTable is the TOML table of the CRI's registry configuration in
// the configuration version (config_path, configs, auths, headers).
func RegistryTable(configVersion int) (string, error) {
	switch configVersion {
	case 2:
		return `plugins."io.containerd.grpc.v1.cri".registry`, nil
	case 3:
		return `plugins."io.containerd.cri.v1.images".registry`, nil
	}
	return "", fmt.Errorf("unsupported containerd config version %d (want 2 for 1.x or 3 for 2.x)", configVersion)
}

// servers is what every configuration version says alike: the daemon's
// private sockets, debug level, metrics, opt dir, and NRI off.
const servers = `{{define "servers"}}
[grpc]
  address = "{{.Address}}"

[ttrpc]
  address = "{{.TTRPC}}"

[debug]
  address = "{{.Debug}}"
  level = "debug"
{{if .MetricsAddress}}
[metrics]
  address = "{{.MetricsAddress}}"
{{end}}
[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Opt}}"

[plugins."io.containerd.nri.v1.nri"]
{{- if .NRISocket}}
  disable = false
  socket_path = "{{.NRISocket}}"
  plugin_path = "{{.NRIPlugins}}"
  plugin_config_path = "{{.NRIConf}}"
{{- else}}
  disable = true
{{- end}}
{{end}}`

// runc is the default CRI runtime handler "runc" with the line's runc
// binary and private root, the same in every configuration version, then
// the caller's Extra TOML.
const runc = `{{define "runc"}}    [{{.RuntimeTable}}.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
{{.RuntimeExtra}}
      [{{.RuntimeTable}}.runtimes.runc.options]
        BinaryName = "{{.Runc}}"
        Root = "{{.RuncRoot}}"
        SystemdCgroup = false
{{.Extra}}
{{end}}`

// configV2 is containerd 1.x's configuration (version = 2).
// restrict_oom_score_adj: this machine's root lacks CAP_SYS_RESOURCE, and
// runc cannot lower a sandbox's oom_score_adj to kubelet's -998 without it.
var configV2 = template.Must(template.Must(template.Must(template.New("v2").Parse(servers)).Parse(runc)).Parse(`version = 2
root = "{{.Root}}"
state = "{{.State}}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
{{template "servers" .}}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.SandboxImage}}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.CNIBin}}"
    conf_dir = "{{.CNIConf}}"
{{- with .RegistryConfigPath}}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{{.}}"
{{- end}}
  [{{.RuntimeTable}}]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
{{- with .ContainerdExtra}}
    {{.}}
{{- end}}
{{template "runc" .}}`))

// configV3 is containerd 2.x's configuration (version = 3), for the v2.3 line.
var configV3 = template.Must(template.Must(template.Must(template.New("v3").Parse(runc)).Parse(servers)).Parse(`version = 3
root = "{{.Root}}"
state = "{{.State}}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
{{template "servers" .}}
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{{.SandboxImage}}"
{{- with .RegistryConfigPath}}
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{{.}}"
{{- end}}

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{{.CNIBin}}"]
    conf_dir = "{{.CNIConf}}"
  [{{.RuntimeTable}}]
    default_runtime_name = "runc"
{{- with .ContainerdExtra}}
    {{.}}
{{- end}}
{{template "runc" .}}`))

// config returns the daemon's configuration: opts.ConfigFile kept on the
// private paths, or one rendered from the options.
func (d *Daemon) config() ([]byte, error) {
	if d.opts.ConfigFile == "" {
		return renderConfig(d.Paths, d.opts)
	}
	b, err := os.ReadFile(d.opts.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("daemon: read config: %w", err)
	}
	return append(append(b, '\n'), privateTables(d.Paths)...), nil
}

// privateTables keep a daemon run from a node's configuration file on its
// private paths for what the --root, --state and --address flags do not
// cover: the ttrpc and debug sockets, the opt directory and NRI's socket
// (NRI is disabled). They are tables a node's file has no reason to hold;
// containerd refuses a file that defines one of them twice.
func privateTables(p Paths) string {
	return fmt.Sprintf(`
# Added by the test harness: private paths.
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins.'io.containerd.internal.v1.opt']
  path = %q
[plugins.'io.containerd.nri.v1.nri']
  disable = true
`, p.TTRPC, p.Debug, p.Opt)
}

// renderConfig returns the TOML configuration for opts at paths.
func renderConfig(p Paths, opts Options) ([]byte, error) {
	var tmpl *template.Template
	if opts.RuntimeTable == "" {
		return nil, fmt.Errorf("no CRI runtime table for config version %d (the line's cri-runtime-table)", opts.ConfigVersion)
	}
	switch opts.ConfigVersion {
	case 2:
		tmpl = configV2
	case 3:
		tmpl = configV3
	default:
		return nil, fmt.Errorf("unsupported containerd config version %d (want 2 for 1.x or 3 for 2.x)", opts.ConfigVersion)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, configData{Paths: p, Options: opts}); err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return buf.Bytes(), nil
}
