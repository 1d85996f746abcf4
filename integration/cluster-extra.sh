# integration/cluster-extra.sh — sourced by integration/cluster: the extra
# nodes, installed by a package or by Ignition instead of by cloud-init
# (`add`, `remove`), and the dist server Ignition fetches the binaries from.

dist_server=deckhand-dist
dist_label=io.deckhand.dist         # not $label: harness_nodes lists that one
dist_ip=$ip_prefix.3
extra_label=io.deckhand.extra       # bare or ignition

# dist_start: (re)fill $cache/http with the staged deckhand and the node
# image's etcd (Debian's etcd-server, as an operator would host etcd's
# release binary), and run the dist server (python3's http.server in a
# container of the node image) at http://$dist_ip:8080/ unless it runs.
dist_start() {
    local image=$1 http="$cache/http" cid
    mkdir -p "$http"
    install -m 0755 "$(pki_bin)" "$http/deckhand.new" && mv -f "$http/deckhand.new" "$http/deckhand"
    if [[ ! -s $http/etcd ]]; then
        cid=$(docker create "$image" /bin/true)
        docker cp "$cid:/usr/bin/etcd" "$http/etcd.new" && mv -f "$http/etcd.new" "$http/etcd"
        docker rm -f "$cid" >/dev/null
    fi
    case $(docker inspect -f "{{index .Config.Labels \"$dist_label\"}} {{.State.Status}}" "$dist_server" 2>/dev/null || true) in
        "1 running") ;;
        1\ *) docker start "$dist_server" >/dev/null ;;
        "")
            ensure_network
            docker run -d --name "$dist_server" --hostname dist \
                --network "$net" --ip "$dist_ip" --label "$dist_label=1" \
                -v "$http:/srv:ro" "$image" \
                python3 -m http.server 8080 --bind "$dist_ip" --directory /srv >/dev/null
            ;;
        *) die "a container named $dist_server exists that the harness did not make: remove it" ;;
    esac
    local deadline=$(( $(date +%s) + 30 ))
    until docker exec "$dist_server" python3 -c "import urllib.request; urllib.request.urlopen('http://$dist_ip:8080/etcd', timeout=2).read(1)" 2>/dev/null; do
        (( $(date +%s) < deadline )) || { docker logs --tail 20 "$dist_server" >&2 || true; die "$dist_server: no answer at http://$dist_ip:8080/"; }
        sleep 0.3
    done
    log "dist server: http://$dist_ip:8080/{deckhand,etcd}"
}

# wait_extra NODE DEADLINE: until systemd in NODE is running/degraded;
# fails at once if the container stopped (an Ignition node whose Ignition
# failed exits: its log says why).
wait_extra() {
    local n=$1 deadline=$2 state
    while :; do
        if [[ $(docker inspect -f '{{.State.Running}}' "$n") != true ]]; then
            docker logs --tail 40 "$n" >&2 || true
            die "$n stopped while booting (its log is above)"
        fi
        state=$(docker exec "$n" systemctl is-system-running 2>/dev/null || true)
        case $state in running|degraded) return 0 ;; esac
        (( $(date +%s) < deadline )) || die "$n: systemd is '$state' after the timeout"
        sleep 1
    done
}

cmd_add() {
    local n kind file=""
    n=$(node_name "${1:-}"); shift || true
    case ${1:-} in
        --bare) kind=bare ;;
        --ignition) kind=ignition; file=${2:-}; [[ -f $file ]] || die "add $n --ignition FILE: no file '$file'" ;;
        *) die "usage: integration/cluster add NODE --bare | --ignition FILE" ;;
    esac
    docker inspect "$n" >/dev/null 2>&1 && die "$n exists (integration/cluster remove $n)"
    local tls image tags
    tls=$(node_tls node1)
    tags=$("$repo/integration/node-image/build-extra")
    if [[ $kind == bare ]]; then image=$(sed -n 1p <<<"$tags"); else image=$(sed -n 2p <<<"$tags"); fi
    local ip mode=() entry=(/sbin/init)
    ip=$(node_ip "$n")
    # TLS: the node's certificates at /opt/deckhand/pki, as on cloud-init
    # nodes (for the operator, the test or deckhand-pki-install.service to
    # install). Plaintext: the plaintext drop-in in /etc/deckhand/config.d.
    [[ -f $pki/nodes/$n/node.crt ]] || issue_node "$n"
    mode=(-v "$pki/nodes/$n:/opt/deckhand/pki:ro")
    if [[ $tls == 0 ]]; then
        [[ -f $plaintext_dropin ]] || write_plaintext_dropin
        mode+=(-v "$plaintext_dropin:/etc/deckhand/config.d/00-harness-plaintext.toml:ro")
    fi
    if [[ $kind == ignition ]]; then
        dist_start "$(cmd_image)"
        mkdir -p "$cache/nodes/$n/ignition"
        cp "$file" "$cache/nodes/$n/ignition/config.ign"
        mode+=(-v "$cache/nodes/$n/ignition:/opt/deckhand/ignition:ro")
        entry=(/usr/local/lib/deckhand-harness/ignition-boot)
    fi
    docker run -d --name "$n" --hostname "$n" \
        --network "$net" --ip "$ip" \
        --label "$label=1" --label "io.deckhand.ip=$ip" --label "$tls_label=$tls" --label "$extra_label=$kind" \
        --cap-add ALL --cap-drop SYS_RESOURCE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        --tmpfs /run:rw,exec,mode=0755 --tmpfs /run/lock:rw,mode=1777 \
        --tmpfs /tmp:rw,exec,mode=1777 \
        -e container=docker --stop-signal SIGRTMIN+3 \
        -v /var/lib/docker \
        "${mode[@]}" \
        --entrypoint "${entry[0]}" "$image" >/dev/null
    wait_extra "$n" $(( $(date +%s) + timeout_s ))
    log "$n added ($kind, from $image): $(docker exec "$n" systemctl is-system-running 2>/dev/null || true)"
}

cmd_remove() {
    local n
    n=$(existing "${1:-}")
    docker rm -f -v "$n" >/dev/null
    rm -rf "$cache/nodes/$n"
    log "$n removed with its disk"
    # The dist server goes with the last Ignition node (a checkout without
    # this file could not `down` the network while it is attached).
    [[ -n $(docker ps -aq --filter "label=$extra_label=ignition") ]] || dist_down
}

# dist_down: the dist server, at `down`.
dist_down() {
    local d
    d=$(docker ps -aq --filter "label=$dist_label=1")
    [[ -z $d ]] || { log "removing $dist_server"; docker rm -f -v "$d" >/dev/null; }
}
